"""Recommendation pipeline of one request: three rounds of reads, then scoring.

1. The user's newest interactions (one paginated Query).
2. The newest users of each seed item (one Query per seed, concurrently).
3. The newest items of the neighbours who share the most seeds (one Query per
   neighbour, concurrently).

The core in ``recommender`` then scores the candidates. Every round is bounded
by ``config.Budgets``, so the cost of a request does not grow with the table.
When the user's history filled its budget, older interactions were not read,
so a fourth round looks the best candidates up by key and drops the ones the
user already has.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field

from config import Settings
from explanations import strongest_seeds
from interaction_store import InteractionStore, ReadStats
from recommender import (
    CooccurrenceIndex,
    recommend_from_neighbourhood,
    select_neighbours,
    select_seed_items,
    user_affinities,
)


# Candidates ranked per requested item when older interactions must be checked.
OVERFETCH_FACTOR = 3


@dataclass(frozen=True)
class ServedRecommendation:
    item_id: str
    score: float
    because: str | None = None


@dataclass
class RecommendationResult:
    user_id: str
    recommendations: list[ServedRecommendation]
    history_items: int = 0
    seed_items: int = 0
    neighbours: int = 0
    candidates: int = 0
    dropped_seen: int = 0
    read_stats: ReadStats = field(default_factory=ReadStats)
    elapsed_ms: float = 0.0

    def log_fields(self) -> dict[str, float | int]:
        """Counts and timings of the request, for its log line."""
        return {
            "history_items": self.history_items,
            "seed_items": self.seed_items,
            "neighbours": self.neighbours,
            "candidates": self.candidates,
            "dropped_seen": self.dropped_seen,
            "recommended": len(self.recommendations),
            **self.read_stats.as_dict(),
            "elapsed_ms": round(self.elapsed_ms, 1),
        }


class RecommendationService:
    def __init__(self, store: InteractionStore, settings: Settings) -> None:
        self._store = store
        self._settings = settings

    def recommend(
        self, user_id: str, limit: int, exclude: Collection[str] = (), explain: bool = False
    ) -> RecommendationResult:
        """Return up to ``limit`` recommendations, with their strongest seed if ``explain``."""
        started = time.perf_counter()
        budgets = self._settings.budgets
        stats = ReadStats()
        result = RecommendationResult(user_id=user_id, recommendations=[], read_stats=stats)

        history = self._store.user_history(user_id, budgets.max_history_items, stats)
        result.history_items = len(history)
        if history:
            seeds = select_seed_items(history, budgets.max_seed_items)
            seed_ids = [row.item_id for row in seeds]
            result.seed_items = len(seed_ids)

            item_users = self._store.users_of_items(seed_ids, budgets.max_users_per_item, stats)
            neighbours = select_neighbours(item_users, user_id, budgets.max_neighbours)
            result.neighbours = len(neighbours)

            if neighbours:
                neighbour_items = self._store.item_histories(
                    neighbours, budgets.max_items_per_neighbour, stats
                )
                # A neighbour's newest items may no longer include the seed that
                # linked them to this user; the item index already showed that
                # interaction, so add it back.
                for item_id, users in item_users.items():
                    for neighbour in users:
                        if neighbour in neighbour_items:
                            neighbour_items[neighbour].append(item_id)
                seen = {row.item_id for row in history}
                result.candidates = len(
                    {item for items in neighbour_items.values() for item in items} - seen - set(exclude)
                )
                history_truncated = len(history) >= budgets.max_history_items
                ranked = recommend_from_neighbourhood(
                    user_id,
                    history,
                    seed_ids,
                    neighbour_items,
                    self._settings.model,
                    limit * OVERFETCH_FACTOR if history_truncated else limit,
                    exclude=exclude,
                )
                if history_truncated and ranked:
                    older = self._store.interacted_items(user_id, [rec.item_id for rec in ranked], stats)
                    result.dropped_seen = len(older)
                    # NOTE: if more than (OVERFETCH_FACTOR - 1) * limit of the best
                    # candidates are old interactions, fewer than limit items return.
                    ranked = [rec for rec in ranked if rec.item_id not in older][:limit]
                because: dict[str, str] = {}
                if explain and ranked:
                    # Rebuilt only on request: explanations are optional and cheap next to the reads.
                    index = CooccurrenceIndex(
                        {**neighbour_items, user_id: list(seen)}, self._settings.model
                    )
                    affinities = user_affinities(seeds, self._settings.model)
                    because = strongest_seeds(index, affinities, [rec.item_id for rec in ranked])
                result.recommendations = [
                    ServedRecommendation(rec.item_id, rec.score, because.get(rec.item_id))
                    for rec in ranked
                ]

        result.elapsed_ms = (time.perf_counter() - started) * 1000
        return result
