"""In-memory stand-in for `model_store.ModelStore`: one built version of the item-similarity model.

The model is built from an evaluation's training split by `item_model`, the
code the model builder runs, so `service.RecommendationService` takes its
`model` path exactly as it would after a build. Reads are counted as the
DynamoDB store counts them: one BatchGetItem call per 100 keys, one item read
per neighbour list found.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from concurrent.futures import Future

from interaction_store import MAX_BATCH_GET_KEYS, ReadStats
from item_model import ItemModel
from model_store import ModelPointer

logger = logging.getLogger(__name__)

EVALUATION_VERSION = "evaluation"


class InMemoryModelStore:
    """Neighbour lists and popular items of one model version, read through `ModelStore`'s methods.

    NOTE: `current_version` reads nothing here. The DynamoDB store reads the
    pointer once per `cache_seconds` per container, so on a warm container
    almost every request reads nothing for it either.
    """

    def __init__(self, model: ItemModel, version: str = EVALUATION_VERSION) -> None:
        started = time.perf_counter()
        self._pointer = ModelPointer(version=version, built_at="")
        self._neighbours = {item.item_id: item.neighbours for item in model.items()}
        self._popular = model.most_popular()
        logger.info(
            "Built the item model of %d items (%d neighbours each at most) in %.1f s",
            len(self._neighbours),
            model.neighbours_per_item,
            time.perf_counter() - started,
        )

    def current_version(self, stats: ReadStats) -> ModelPointer | None:
        return self._pointer

    def current_version_soon(self, stats: ReadStats) -> Future[ModelPointer | None]:
        done: Future[ModelPointer | None] = Future()
        done.set_result(self._pointer)
        return done

    def neighbour_lists(
        self, version: str, item_ids: Iterable[str], stats: ReadStats
    ) -> dict[str, list[tuple[str, float]]]:
        """Return the neighbour lists of the items of `item_ids` that the model has."""
        self._check_version(version)
        unique = list(dict.fromkeys(item_ids))
        if not unique:
            return {}
        stats.rounds += 1
        results: dict[str, list[tuple[str, float]]] = {}
        for start in range(0, len(unique), MAX_BATCH_GET_KEYS):
            batch = unique[start : start + MAX_BATCH_GET_KEYS]
            found = {
                item_id: self._neighbours[item_id]
                for item_id in batch
                if item_id in self._neighbours
            }
            stats.record_page(len(found), 0.0, operation="batch_get_item")
            results.update(found)
        return results

    def similar_items(
        self, version: str, item_id: str, stats: ReadStats
    ) -> list[tuple[str, float]] | None:
        self._check_version(version)
        neighbours = self._neighbours.get(item_id)
        # The DynamoDB store records its GetItem calls as it records Queries.
        stats.record_page(0 if neighbours is None else 1, 0.0)
        return neighbours

    def popular_items(self, version: str, stats: ReadStats) -> list[tuple[str, int]]:
        self._check_version(version)
        stats.record_page(1, 0.0)
        return list(self._popular)

    def _check_version(self, version: str) -> None:
        if version != self._pointer.version:
            raise ValueError(
                f"model version {version!r} is not in this store, which has"
                f" {self._pointer.version!r}"
            )
