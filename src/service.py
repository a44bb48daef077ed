"""Recommendation pipeline of one request: bounded rounds of reads, then scoring.

Three sources, tried in this order:

- ``model``: a precomputed item-similarity model is configured and built. The
  user's newest interactions (one paginated Query), then the neighbour lists of
  the seed items (BatchGetItem), scored with ``recommender.score_items``.
- ``online``: no model, or none of the seeds is in it yet. The newest users of
  each seed item, then the newest items of the neighbours who share the most
  seeds (Queries run concurrently), scored by ``recommender``'s online form.
  When only some seeds are missing from the model (items new since the last
  build), the online form runs for those seeds alone, and its ranking is
  blended with the model's, each weighted by the affinity of its seeds.
- ``popular``: the user has no interactions; the model's most popular items.

Every round is bounded by ``config.Budgets``, so the cost of a request does not
grow with the table. When the user's history filled its budget, older
interactions were not read, so one more round looks the best candidates up by
key and drops the ones the user already has.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from config import Settings
from interaction_store import InteractionStore, ReadStats, StoreUnavailableError
from model_store import ModelStore
from recommender import (
    CooccurrenceIndex,
    Interaction,
    Recommendation,
    blend_rankings,
    recommend_from_index,
    scale_rankings,
    score_items,
    seed_contributions,
    select_neighbours,
    select_seed_items,
    user_affinities,
)

# Candidates ranked, and checked by key, per requested item when the user's
# history was longer than its read budget. A heavy user can have most of the
# best candidates among their older items: with 3, a user with 977 ratings got
# 4 of 10 items in the request benchmark. The check costs one BatchGetItem
# round of limit * 10 keys (in batches of 100, concurrently).
OVERFETCH_FACTOR = 10
# Depth of each ranking that is blended, as a multiple of the requested count.
# An item in second place on both sides must not be cut before the blend.
BLEND_DEPTH = 3


@dataclass(frozen=True)
class ServedRecommendation:
    item_id: str
    score: float
    because: str | None = None


@dataclass
class RecommendationResult:
    user_id: str
    recommendations: list[ServedRecommendation]
    source: str = "none"
    model_version: str | None = None
    history_items: int = 0
    seed_items: int = 0
    uncovered_seeds: int = 0
    fallback_seeds: int = 0
    neighbours: int = 0
    candidates: int = 0
    dropped_seen: int = 0
    read_stats: ReadStats = field(default_factory=ReadStats)
    elapsed_ms: float = 0.0

    def log_fields(self) -> dict[str, float | int | str | None]:
        """Counts and timings of the request, for its log line."""
        return {
            "source": self.source,
            "model_version": self.model_version,
            "history_items": self.history_items,
            "seed_items": self.seed_items,
            "uncovered_seeds": self.uncovered_seeds,
            "fallback_seeds": self.fallback_seeds,
            "neighbours": self.neighbours,
            "candidates": self.candidates,
            "dropped_seen": self.dropped_seen,
            "recommended": len(self.recommendations),
            **self.read_stats.as_dict(),
            "elapsed_ms": round(self.elapsed_ms, 1),
        }


def strongest_seed(contributions: Mapping[str, float]) -> str | None:
    """Return the seed with the largest contribution, ties to the smaller id."""
    if not contributions:
        return None
    return min(contributions, key=lambda seed: (-contributions[seed], seed))


class ModelNotBuiltError(StoreUnavailableError):
    """A request needs the precomputed model, and no build has finished yet."""


@dataclass
class SimilarItemsResult:
    item_id: str
    similar: list[ServedRecommendation]
    model_version: str
    read_stats: ReadStats
    elapsed_ms: float = 0.0

    def log_fields(self) -> dict[str, float | int | str]:
        return {
            "model_version": self.model_version,
            "recommended": len(self.similar),
            **self.read_stats.as_dict(),
            "elapsed_ms": round(self.elapsed_ms, 1),
        }


class RecommendationService:
    def __init__(
        self, store: InteractionStore, settings: Settings, model_store: ModelStore | None = None
    ) -> None:
        self._store = store
        self._settings = settings
        self._model_store = model_store

    @property
    def has_model(self) -> bool:
        return self._model_store is not None

    def recommend(
        self, user_id: str, limit: int, exclude: Collection[str] = (), explain: bool = False
    ) -> RecommendationResult:
        """Return up to ``limit`` recommendations, with their strongest seed if ``explain``."""
        started = time.perf_counter()
        stats = ReadStats()
        result = RecommendationResult(user_id=user_id, recommendations=[], read_stats=stats)
        budgets = self._settings.budgets

        # The CURRENT pointer, when its cache has expired, is read while the
        # history Query runs, so it adds no round of its own.
        pending = self._model_store.current_version_soon(stats) if self._model_store else None
        history = self._store.user_history(user_id, budgets.max_history_items, stats)
        pointer = pending.result() if pending is not None else None
        result.model_version = pointer.version if pointer else None
        result.history_items = len(history)

        if not history:
            if pointer is not None and self._model_store is not None:
                self._serve_popular(result, pointer.version, limit, exclude)
        else:
            history_truncated = len(history) >= budgets.max_history_items
            top_k = limit * OVERFETCH_FACTOR if history_truncated else limit
            seeds = select_seed_items(history, budgets.max_seed_items)
            result.seed_items = len(seeds)

            ranked, because = [], {}
            if pointer is not None:
                # A neighbour list costs one key read, so the model path can
                # afford more seeds than the online path.
                model_seeds = select_seed_items(history, budgets.max_model_seed_items)
                ranked, because = self._rank_with_model(
                    result, pointer.version, history, model_seeds, top_k, exclude, explain
                )
            if result.source == "none":
                result.source = "online"
                ranked, because = self._rank_online(
                    result, user_id, history, seeds, top_k, exclude, explain
                )

            if history_truncated and ranked:
                older = self._store.interacted_items(
                    user_id, [rec.item_id for rec in ranked], stats
                )
                result.dropped_seen = len(older)
                # NOTE: if more than (OVERFETCH_FACTOR - 1) * limit of the best
                # candidates are older interactions, fewer than limit items return.
                ranked = [rec for rec in ranked if rec.item_id not in older]
            result.recommendations = [
                ServedRecommendation(rec.item_id, rec.score, because.get(rec.item_id))
                for rec in ranked[:limit]
            ]

        result.elapsed_ms = (time.perf_counter() - started) * 1000
        return result

    def similar_items(self, item_id: str, limit: int) -> SimilarItemsResult:
        """Return the model's most similar items to ``item_id`` (empty for an unknown item)."""
        started = time.perf_counter()
        stats = ReadStats()
        pointer = self._model_store.current_version(stats) if self._model_store else None
        if pointer is None or self._model_store is None:
            raise ModelNotBuiltError(
                "the item-similarity model has not been built yet", error_code="ModelNotBuilt"
            )
        stats.rounds += 1
        neighbours = self._model_store.similar_items(pointer.version, item_id, stats) or []
        similar = [ServedRecommendation(other, score) for other, score in neighbours[:limit]]
        elapsed_ms = (time.perf_counter() - started) * 1000
        return SimilarItemsResult(item_id, similar, pointer.version, stats, elapsed_ms)

    def _serve_popular(
        self, result: RecommendationResult, version: str, limit: int, exclude: Collection[str]
    ) -> None:
        assert self._model_store is not None
        result.read_stats.rounds += 1
        popular = self._model_store.popular_items(version, result.read_stats)
        result.source = "popular"
        result.candidates = len(popular)
        # Scores are the share of users who have the item, relative to the top one.
        top_users = popular[0][1] if popular else 1
        result.recommendations = [
            ServedRecommendation(item_id, users / top_users)
            for item_id, users in popular
            if item_id not in exclude
        ][:limit]

    def _rank_with_model(
        self,
        result: RecommendationResult,
        version: str,
        history: Sequence[Interaction],
        seeds: Sequence[Interaction],
        top_k: int,
        exclude: Collection[str],
        explain: bool,
    ) -> tuple[list[Recommendation], dict[str, str]]:
        assert self._model_store is not None
        seed_ids = [row.item_id for row in seeds]
        rows = self._model_store.neighbour_lists(version, seed_ids, result.read_stats)
        covered = [row for row in seeds if row.item_id in rows]
        uncovered = [row for row in seeds if row.item_id not in rows]
        result.uncovered_seeds = len(uncovered)
        result.seed_items = len(seeds)
        if not covered:
            return [], {}

        result.source = "model"
        similarity = {item_id: dict(neighbours) for item_id, neighbours in rows.items()}
        affinities = user_affinities(covered, self._settings.model)
        result.candidates = len({item for row in similarity.values() for item in row})
        seen = {row.item_id for row in history}
        depth = top_k * BLEND_DEPTH if uncovered else top_k
        ranked = score_items(affinities, similarity, depth, exclude=seen.union(exclude))

        because: dict[str, str] = {}
        if explain:
            for rec in ranked:
                shares = {
                    seed: affinity * similarity[seed].get(rec.item_id, 0.0)
                    for seed, affinity in affinities.items()
                    if similarity[seed].get(rec.item_id, 0.0) > 0
                }
                seed = strongest_seed(shares)
                if seed is not None:
                    because[rec.item_id] = seed
        if not uncovered:
            return ranked, because
        return self._blend_new_seeds(
            result, history, uncovered, (ranked, because, sum(affinities.values())),
            top_k, exclude, explain,
        )  # fmt: skip

    def _blend_new_seeds(
        self,
        result: RecommendationResult,
        history: Sequence[Interaction],
        uncovered: Sequence[Interaction],
        model_side: tuple[list[Recommendation], dict[str, str], float],
        top_k: int,
        exclude: Collection[str],
        explain: bool,
    ) -> tuple[list[Recommendation], dict[str, str]]:
        """Rank the seeds missing from the model online and blend that with the model's ranking.

        Only the newest ``max_seed_items`` missing seeds are read, within the
        online budgets, so the two extra rounds stay bounded.
        """
        model_ranked, model_because, model_weight = model_side
        fallback = select_seed_items(uncovered, self._settings.budgets.max_seed_items)
        result.fallback_seeds = len(fallback)
        online_ranked, online_because = self._rank_online(
            result, result.user_id, history, fallback, top_k * BLEND_DEPTH, exclude, explain
        )
        online_weight = sum(user_affinities(fallback, self._settings.model).values())
        sides = [(model_ranked, model_weight), (online_ranked, online_weight)]
        ranked = blend_rankings(sides, top_k)
        if not explain:
            return ranked, {}
        # The seed named is the one from the side that gave the item the larger part.
        model_parts, online_parts = scale_rankings(sides)
        because: dict[str, str] = {}
        for rec in ranked:
            model_part = model_parts.get(rec.item_id, 0.0)
            online_part = online_parts.get(rec.item_id, 0.0)
            side = model_because if model_part >= online_part else online_because
            if rec.item_id in side:
                because[rec.item_id] = side[rec.item_id]
        return ranked, because

    def _rank_online(
        self,
        result: RecommendationResult,
        user_id: str,
        history: Sequence[Interaction],
        seeds: Sequence[Interaction],
        top_k: int,
        exclude: Collection[str],
        explain: bool,
    ) -> tuple[list[Recommendation], dict[str, str]]:
        budgets = self._settings.budgets
        stats = result.read_stats
        seed_ids = [row.item_id for row in seeds]
        item_users = self._store.users_of_items(seed_ids, budgets.max_users_per_item, stats)
        neighbours = select_neighbours(item_users, user_id, budgets.max_neighbours)
        result.neighbours += len(neighbours)
        if not neighbours:
            return [], {}

        neighbour_items = self._store.item_histories(
            neighbours, budgets.max_items_per_neighbour, stats
        )
        # A neighbour's newest items may no longer include the seed that linked
        # them to this user. The item index already showed that interaction, so
        # it is added back.
        for item_id, users in item_users.items():
            for neighbour in users:
                if neighbour in neighbour_items:
                    neighbour_items[neighbour].append(item_id)

        seen = {row.item_id for row in history}
        result.candidates += len(
            {item for items in neighbour_items.values() for item in items} - seen - set(exclude)
        )
        user_items: dict[str, Collection[str]] = {**neighbour_items, user_id: list(seen)}
        index = CooccurrenceIndex(user_items, self._settings.model)
        ranked = recommend_from_index(index, history, seed_ids, top_k, exclude=exclude)

        because: dict[str, str] = {}
        if explain and ranked:
            affinities = user_affinities(seeds, self._settings.model)
            shares = seed_contributions(index, affinities, [rec.item_id for rec in ranked])
            for item_id, contributions in shares.items():
                seed = strongest_seed(contributions)
                if seed is not None:
                    because[item_id] = seed
        return ranked, because
