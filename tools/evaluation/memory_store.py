"""In-memory stand-in for `interaction_store.InteractionStore`, for the served-quality evaluation.

It serves the reads of the request path from dicts, with the same order,
budgets and `ReadStats` counting as the DynamoDB store, so that
`service.RecommendationService` runs unchanged on an evaluation's training
split:

- order: newest first by timestamp, as a Query with ScanIndexForward=False;
  equal timestamps in ascending key order (item id for a user's history, user id
  for an item's users).
- pages: at most `page_size` entries per Query call (DynamoDB's Limit). A page
  that stops at its Limit is followed by one more call, because DynamoDB then
  returns a LastEvaluatedKey even when nothing follows.
- lookups by key (`interacted_items`): one BatchGetItem call per 100 keys,
  counting the items found as read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from interaction_store import MAX_BATCH_GET_KEYS, MAX_PAGE_SIZE, ReadStats
from recommender import Interaction

Entry = TypeVar("Entry")


class InMemoryInteractionStore:
    """Interactions held in memory, read through the methods of `InteractionStore`.

    NOTE: DynamoDB does not document the order of index entries with equal sort
    keys, so ties ordered by key are this store's choice. DynamoDB also ends a
    page at 1 MB, which this store ignores: entries of two ids and a timestamp
    reach 1 MB only far beyond the 1000-entry Limit. Consumed capacity is not
    estimated and stays 0.
    """

    def __init__(
        self, histories: Mapping[str, Sequence[Interaction]], page_size: int = MAX_PAGE_SIZE
    ) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size!r}")
        self._page_size = page_size
        self._user_rows: dict[str, list[Interaction]] = {}
        self._user_items: dict[str, frozenset[str]] = {}
        item_entries: dict[str, list[tuple[int, str]]] = {}
        for user_id, history in histories.items():
            latest: dict[str, Interaction] = {}
            for row in history:
                # One item per (user_id, item_id) key, as in the table: the last row wins.
                latest[row.item_id] = row
            rows = sorted(latest.values(), key=lambda row: row.item_id)
            rows.sort(key=lambda row: row.timestamp, reverse=True)
            self._user_rows[user_id] = rows
            self._user_items[user_id] = frozenset(latest)
            for row in rows:
                item_entries.setdefault(row.item_id, []).append((row.timestamp, user_id))

        self._item_users: dict[str, list[str]] = {}
        for item_id, entries in item_entries.items():
            entries.sort(key=lambda entry: entry[1])
            entries.sort(key=lambda entry: entry[0], reverse=True)
            self._item_users[item_id] = [user_id for _timestamp, user_id in entries]

    def user_history(self, user_id: str, max_items: int, stats: ReadStats) -> list[Interaction]:
        """Return up to `max_items` of the user's newest interactions."""
        stats.rounds += 1
        return self._query(self._user_rows.get(user_id, []), max_items, stats)

    def users_of_items(
        self, item_ids: Sequence[str], max_users_per_item: int, stats: ReadStats
    ) -> dict[str, list[str]]:
        """Return up to `max_users_per_item` newest users of each item, one Query per item."""
        stats.rounds += 1
        return {
            item_id: self._query(self._item_users.get(item_id, []), max_users_per_item, stats)
            for item_id in dict.fromkeys(item_ids)
        }

    def item_histories(
        self, user_ids: Sequence[str], max_items_per_user: int, stats: ReadStats
    ) -> dict[str, list[str]]:
        """Return the item ids of up to `max_items_per_user` newest interactions of each user."""
        stats.rounds += 1
        histories: dict[str, list[str]] = {}
        for user_id in dict.fromkeys(user_ids):
            rows = self._query(self._user_rows.get(user_id, []), max_items_per_user, stats)
            histories[user_id] = [row.item_id for row in rows]
        return histories

    def interacted_items(self, user_id: str, item_ids: Sequence[str], stats: ReadStats) -> set[str]:
        """Return which of `item_ids` the user has an interaction with, whatever its age."""
        stats.rounds += 1
        unique_ids = list(dict.fromkeys(item_ids))
        owned = self._user_items.get(user_id, frozenset())
        found: set[str] = set()
        for start in range(0, len(unique_ids), MAX_BATCH_GET_KEYS):
            batch = unique_ids[start : start + MAX_BATCH_GET_KEYS]
            owned_in_batch = [item_id for item_id in batch if item_id in owned]
            stats.record_page(len(owned_in_batch), 0.0, operation="batch_get_item")
            found.update(owned_in_batch)
        return found

    def _query(self, entries: list[Entry], max_items: int, stats: ReadStats) -> list[Entry]:
        # Counts pages as the DynamoDB store's pagination loop makes them.
        position = 0
        while position < max_items:
            limit = min(max_items - position, self._page_size)
            page_items = len(entries[position : position + limit])
            stats.record_page(page_items, 0.0)
            position += page_items
            if page_items < limit:
                break
        return entries[:max_items]
