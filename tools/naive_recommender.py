"""The naive full-scan recommender, kept only as the baseline of tools/bench_requests.py.

It computes recommendations the way a first tutorial version of this service would:

1. Query the target user's history on the base table (all pages).
2. For each item i of that history, Scan the whole table to its last page and group the
   rows by user. Every other user who has i adds 1 to the count of each of their items that
   the target user has not seen.
3. Return the items with the highest raw co-occurrence counts.

Every history item costs one full Scan, so one request reads |history| * |table| items
plus the history itself. The request path in src/ never does this: it runs budgeted
Queries on the two indexes instead.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


class NaiveDeadlineError(RuntimeError):
    """The time budget ran out before every Scan of one request was done."""

    def __init__(self, user_id: str, scans_done: int, scans_needed: int, stats: NaiveStats) -> None:
        super().__init__(
            f"time budget exhausted for user {user_id!r} after {scans_done} of "
            f"{scans_needed} full-table Scans; raise the time budget to measure this user whole"
        )
        self.user_id = user_id
        self.scans_done = scans_done
        self.scans_needed = scans_needed
        self.stats = stats


@dataclass
class NaiveStats:
    """DynamoDB usage of one naive request, counted from the responses."""

    query_calls: int = 0
    scan_calls: int = 0
    full_scans: int = 0
    # ScannedCount: items DynamoDB read, which is what a Scan is billed on.
    items_read: int = 0
    # Count: items returned to the client (equal to items_read: no filter is applied).
    items_returned: int = 0
    consumed_capacity: float = 0.0
    scan_seconds: list[float] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return self.query_calls + self.scan_calls

    def record(self, page: Mapping[str, Any], *, is_scan: bool) -> None:
        if is_scan:
            self.scan_calls += 1
        else:
            self.query_calls += 1
        returned = int(page.get("Count", 0))
        self.items_returned += returned
        self.items_read += int(page.get("ScannedCount", returned))
        self.consumed_capacity += float(page.get("ConsumedCapacity", {}).get("CapacityUnits", 0.0))


@dataclass
class NaiveResult:
    user_id: str
    recommendations: list[tuple[str, int]]  # (item_id, co-occurrence count), best first
    history_items: int
    stats: NaiveStats
    elapsed_ms: float


def add_cooccurrences(
    counts: dict[str, int],
    seed_item: str,
    user_items: Mapping[str, Iterable[str]],
    target_user: str,
    seen: set[str],
) -> None:
    """Add 1 to ``counts[j]`` for each unseen item j of each other user who has ``seed_item``."""
    for user_id, items in user_items.items():
        if user_id == target_user:
            continue
        item_set = set(items)
        if seed_item not in item_set:
            continue
        for item_id in item_set:
            if item_id not in seen:
                counts[item_id] += 1


def top_items(counts: Mapping[str, int], limit: int) -> list[tuple[str, int]]:
    """Return the ``limit`` items with the highest counts, ties broken by ascending item id."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit!r}")
    return heapq.nsmallest(limit, counts.items(), key=lambda pair: (-pair[1], pair[0]))


class NaiveRecommender:
    """Runs the naive algorithm against one table through a boto3 DynamoDB client."""

    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table_name = table_name

    def recommend(
        self, user_id: str, limit: int = 10, *, deadline: float | None = None
    ) -> NaiveResult:
        """Recommend ``limit`` items for ``user_id``.

        ``deadline`` is a ``time.monotonic()`` value checked before each Scan; past it,
        NaiveDeadlineError is raised with the counts so far.
        """
        started = time.perf_counter()
        stats = NaiveStats()
        history = self.user_history(user_id, stats)
        seen = set(history)
        counts: dict[str, int] = defaultdict(int)

        for position, seed_item in enumerate(history):
            if deadline is not None and time.monotonic() >= deadline:
                raise NaiveDeadlineError(user_id, position, len(history), stats)
            scan_started = time.perf_counter()
            user_items: dict[str, list[str]] = defaultdict(list)
            for row in self.scan_table(stats):
                user_items[row["user_id"]["S"]].append(row["item_id"]["S"])
            add_cooccurrences(counts, seed_item, user_items, user_id, seen)
            stats.full_scans += 1
            stats.scan_seconds.append(time.perf_counter() - scan_started)
            logger.debug(
                "User %s: full Scan %d of %d took %.2f s",
                user_id,
                position + 1,
                len(history),
                stats.scan_seconds[-1],
            )

        return NaiveResult(
            user_id=user_id,
            recommendations=top_items(counts, limit),
            history_items=len(history),
            stats=stats,
            elapsed_ms=(time.perf_counter() - started) * 1000,
        )

    def user_history(self, user_id: str, stats: NaiveStats) -> list[str]:
        """Return the item ids of every interaction of ``user_id`` (base table, all pages)."""
        request: dict[str, Any] = {
            "TableName": self._table_name,
            "KeyConditionExpression": "user_id = :user",
            "ExpressionAttributeValues": {":user": {"S": user_id}},
            "ProjectionExpression": "item_id",
            "ReturnConsumedCapacity": "TOTAL",
        }
        items: list[str] = []
        while True:
            page = self._client.query(**request)
            stats.record(page, is_scan=False)
            items.extend(row["item_id"]["S"] for row in page.get("Items", []))
            last_key = page.get("LastEvaluatedKey")
            if not last_key:
                return items
            request["ExclusiveStartKey"] = last_key

    def scan_table(self, stats: NaiveStats) -> Iterator[dict[str, Any]]:
        """Yield every row of the table, one Scan page after the other, to the last page."""
        # The projection only shortens the responses: DynamoDB reads, and bills, whole items.
        request: dict[str, Any] = {
            "TableName": self._table_name,
            "ProjectionExpression": "user_id, item_id",
            "ReturnConsumedCapacity": "TOTAL",
        }
        while True:
            page = self._client.scan(**request)
            stats.record(page, is_scan=True)
            yield from page.get("Items", [])
            last_key = page.get("LastEvaluatedKey")
            if not last_key:
                return
            request["ExclusiveStartKey"] = last_key
