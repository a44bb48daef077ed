"""Recommenders that the evaluation harness can rank items with.

Each scorer returns the ids of the top `top_k` items for one user, from that
user's training history, never an item of that history.

- `CoreScorer`: the service's model (src/recommender.py), fitted on the whole
  training split: every user of the split is a neighbour of every other.
- `ServedScorer`: the real request path, `service.RecommendationService`, on an
  in-memory copy of the training split, within `config.Budgets`, online or
  from a precomputed item model.
- `PopularScorer` and `JaccardScorer`: baselines that the service does not
  offer, computed here only.

Raw co-occurrence counts and cosine similarity are special cases of the core
formula, so they run through `CoreScorer` (see `baseline_configs`).
"""

from __future__ import annotations

import heapq
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from config import Budgets, Settings
from interaction_store import ReadStats
from item_model import InteractionRecord, build_item_model, similarity_config
from recommender import CooccurrenceIndex, Interaction, ModelConfig, recommend_from_index
from service import RecommendationService
from tools.evaluation.memory_model_store import InMemoryModelStore
from tools.evaluation.memory_store import InMemoryInteractionStore


class Scorer(Protocol):
    def recommend(self, user_id: str, history: Sequence[Interaction], top_k: int) -> list[str]: ...


def baseline_configs() -> dict[str, ModelConfig]:
    """Return the core configurations that reproduce two classic item-based baselines.

    With overlap_exponent 1 and no user weighting the core computes
    ``sum_i C_ij / (pop_i ** alpha * pop_j ** beta)`` over the user's items:
    raw co-occurrence counts for alpha = beta = 0, cosine for alpha = beta = 0.5.
    """
    return {
        "raw_counts": ModelConfig(
            alpha=0.0, beta=0.0, user_weight_exponent=0.0, overlap_exponent=1.0
        ),
        "cosine": ModelConfig(alpha=0.5, beta=0.5, user_weight_exponent=0.0, overlap_exponent=1.0),
    }


def _item_ids(history: Sequence[Interaction]) -> list[str]:
    return [row.item_id for row in history]


class CoreScorer:
    """The core model with the whole training split as the log (no request budgets)."""

    def __init__(self, train: Mapping[str, Sequence[Interaction]], config: ModelConfig) -> None:
        self.config = config
        self.index = CooccurrenceIndex(
            {user_id: _item_ids(history) for user_id, history in train.items()}, config
        )

    def recommend(self, user_id: str, history: Sequence[Interaction], top_k: int) -> list[str]:
        ranked = recommend_from_index(self.index, history, _item_ids(history), top_k)
        return [recommendation.item_id for recommendation in ranked]


@dataclass
class ServedTotals:
    """Sums over the requests of a served evaluation, for per-request means."""

    requests: int = 0
    items_read: int = 0
    query_calls: int = 0
    batch_get_calls: int = 0
    dropped_seen: int = 0
    seen_recommended: int = 0
    short_lists: int = 0
    history_items: int = 0
    neighbours: int = 0
    candidates: int = 0
    elapsed_ms: float = 0.0
    reads: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, float | int]:
        requests = max(self.requests, 1)
        reads = sorted(self.reads)
        return {
            "requests": self.requests,
            "items_read_per_request": self.items_read / requests,
            "items_read_p95": reads[int(0.95 * (len(reads) - 1))] if reads else 0,
            "query_calls_per_request": self.query_calls / requests,
            "batch_get_calls_per_request": self.batch_get_calls / requests,
            "dropped_seen_per_request": self.dropped_seen / requests,
            "neighbours_per_request": self.neighbours / requests,
            "candidates_per_request": self.candidates / requests,
            "service_ms_per_request": self.elapsed_ms / requests,
            "seen_recommended": self.seen_recommended,
            "short_lists": self.short_lists,
        }


class ServedScorer:
    """`service.RecommendationService` on an in-memory copy of the training split.

    With `model_neighbours` None the service takes its online path. With N, an
    item-similarity model of N neighbours per item is built from the training
    split as the model builder would build it, and the service takes its model
    path. When a user's history fills `max_history_items`, the service looks its
    best candidates up by key and drops older training items. Any training item
    still returned counts in `totals.seen_recommended` and scores as a miss, as
    the user would see it.
    """

    def __init__(
        self,
        train: Mapping[str, Sequence[Interaction]],
        config: ModelConfig,
        budgets: Budgets,
        model_neighbours: int | None = None,
        item_model_base: ModelConfig | None = None,
    ) -> None:
        self.config = config
        self.budgets = budgets
        self.store = InMemoryInteractionStore(train)
        self.model_store: InMemoryModelStore | None = None
        if model_neighbours is not None:
            # The model builder's configuration: its own exponents (item_model_base,
            # default the request path's), p = 1 and N.
            records = (
                InteractionRecord(
                    user_id, row.item_id, row.interaction_type, row.timestamp, row.weight
                )
                for user_id, history in train.items()
                for row in history
            )
            model = build_item_model(
                records, similarity_config(model_neighbours, item_model_base or config)
            )
            self.model_store = InMemoryModelStore(model)
        settings = Settings(
            table_name="in-memory",
            user_history_index="UserHistoryIndex",
            item_users_index="ItemUsersIndex",
            budgets=budgets,
            model=config,
        )
        # The service calls only the read methods, which the in-memory stores offer.
        self.service = RecommendationService(
            self.store,
            settings,
            self.model_store,  # type: ignore[arg-type]
        )
        self.sources: Counter[str] = Counter()
        self.totals = ServedTotals()

    def recommend(self, user_id: str, history: Sequence[Interaction], top_k: int) -> list[str]:
        result = self.service.recommend(user_id, top_k)
        ranked = [recommendation.item_id for recommendation in result.recommendations]
        stats: ReadStats = result.read_stats
        seen = set(_item_ids(history))

        self.sources[result.source] += 1
        totals = self.totals
        totals.requests += 1
        totals.items_read += stats.items_read
        totals.query_calls += stats.query_calls
        totals.batch_get_calls += stats.batch_get_calls
        totals.dropped_seen += result.dropped_seen
        totals.reads.append(stats.items_read)
        totals.history_items += result.history_items
        totals.neighbours += result.neighbours
        totals.candidates += result.candidates
        totals.elapsed_ms += result.elapsed_ms
        totals.seen_recommended += sum(1 for item_id in ranked if item_id in seen)
        if len(ranked) < top_k:
            totals.short_lists += 1
        return ranked


def _top_unseen(
    scores: Sequence[float], item_ids: Sequence[str], seen: set[int], top_k: int
) -> list[str]:
    # Highest score first, ties to the smaller item id, as the core ranks.
    candidates = (
        (score, position)
        for position, score in enumerate(scores)
        if score > 0 and position not in seen
    )
    best = heapq.nsmallest(top_k, candidates, key=lambda pair: (-pair[0], item_ids[pair[1]]))
    return [item_ids[position] for _score, position in best]


class PopularScorer:
    """Most popular items: ranked by the number of training users who have them."""

    def __init__(self, train: Mapping[str, Sequence[Interaction]]) -> None:
        popularity = Counter(
            item_id for history in train.values() for item_id in set(_item_ids(history))
        )
        self._ranking = sorted(popularity, key=lambda item_id: (-popularity[item_id], item_id))

    def recommend(self, user_id: str, history: Sequence[Interaction], top_k: int) -> list[str]:
        seen = set(_item_ids(history))
        ranked: list[str] = []
        for item_id in self._ranking:
            if item_id not in seen:
                ranked.append(item_id)
                if len(ranked) == top_k:
                    break
        return ranked


class JaccardScorer:
    """Jaccard item similarity summed over the user's items, as Microsoft Recommenders' SAR does.

    ``sim_ij = C_ij / (pop_i + pop_j - C_ij)`` with ``C_ij`` the number of
    training users with both items, and every history item of affinity 1 (the
    protocol counts each rating as one implicit interaction). Similarity rows
    are computed once, as arrays on integer item positions, because this
    non-linear similarity has no one-pass form.
    """

    def __init__(self, train: Mapping[str, Sequence[Interaction]]) -> None:
        self._item_ids = sorted({row.item_id for history in train.values() for row in history})
        self._position = {item_id: position for position, item_id in enumerate(self._item_ids)}
        user_lists = [
            sorted({self._position[row.item_id] for row in history})
            for history in train.values()
            if history
        ]
        item_users: list[list[int]] = [[] for _item in self._item_ids]
        for user, items in enumerate(user_lists):
            for item in items:
                item_users[item].append(user)
        popularity = [len(users) for users in item_users]

        self._rows: list[tuple[array, array]] = []
        for item, users in enumerate(item_users):
            counts: Counter[int] = Counter()
            for user in users:
                # Counter.update on a list counts in C, which keeps this build to seconds.
                counts.update(user_lists[user])
            del counts[item]
            item_popularity = popularity[item]
            self._rows.append(
                (
                    array("l", counts.keys()),
                    array(
                        "d",
                        [
                            count / (item_popularity + popularity[other] - count)
                            for other, count in counts.items()
                        ],
                    ),
                )
            )

    def recommend(self, user_id: str, history: Sequence[Interaction], top_k: int) -> list[str]:
        seeds = {self._position[row.item_id] for row in history if row.item_id in self._position}
        scores = [0.0] * len(self._item_ids)
        for seed in sorted(seeds):
            others, similarities = self._rows[seed]
            for other, similarity in zip(others, similarities):
                scores[other] += similarity
        return _top_unseen(scores, self._item_ids, seeds, top_k)
