"""Offline item-similarity model: pure Python, no AWS imports.

The model stores, for every item i of the interaction log, its popularity
``pop_i`` (number of distinct users) and its N most similar items j with
``sim_ij`` of the item-based form in ``recommender``::

    sim_ij = C_ij / (pop_i ** alpha * pop_j ** beta)
    C_ij   = sum over users u with i and j in H_u of 1 / |H_u| ** q

plus the 100 most popular items as a fallback for users without history.
``build_item_model`` computes the rows with ``CooccurrenceIndex.similarity_row``,
the same code the request path runs, so a stored row equals the row the
service would compute over the same log.

The same computation is also written as two steps that a distributed engine
can run unchanged. The map step per user (``map_user``) emits every ordered
pair of the user's distinct items with the user's weight. The reduce step per
item (``reduce_item``) sums, normalises and keeps the top N.
``neighbours_by_map_reduce`` runs both in memory, and the unit tests hold its
result equal to the core's.
"""

from __future__ import annotations

import heapq
import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

from recommender import CooccurrenceIndex, ModelConfig

DEFAULT_NEIGHBOURS_PER_ITEM = 100
# Upper bound of neighbours_per_item. With item ids of up to about 370 bytes a
# full list of 1000 still fits in MAX_NEIGHBOURS_BYTES.
MAX_NEIGHBOURS_PER_ITEM = 1000
POPULAR_ITEMS = 100

# DynamoDB's item size limit is 400 KB, attribute names and values included.
# The encoded list gets all but 4 KB of it. Those 4 KB cover the key (at most
# about 1 KB of item id plus the version prefix) and the numeric attributes.
MAX_ITEM_BYTES = 400 * 1024
MAX_NEIGHBOURS_BYTES = MAX_ITEM_BYTES - 4 * 1024


class ModelInputError(ValueError):
    """An interaction of the log cannot be used: an id is missing or not a string."""


class ModelFormatError(ValueError):
    """A stored neighbour or popularity list is not in the format that ``encode_*`` writes."""


class InteractionRecord(NamedTuple):
    """One row of the interactions table, as the builder reads it."""

    user_id: str
    item_id: str
    interaction_type: str = "interaction"
    timestamp: int = 0
    weight: float | None = None


@dataclass(frozen=True)
class ModelItem:
    """The model's entry for one item: its popularity and its neighbours, best first."""

    item_id: str
    popularity: int
    neighbours: list[tuple[str, float]]


@dataclass(frozen=True)
class UserItems:
    """The log grouped by user, and how many rows were read."""

    # Each user's items; an item may repeat, and the index counts it once.
    items_by_user: dict[str, list[str]]
    interactions: int
    # Users whose history was cut to max_items_per_user.
    truncated_users: int = 0


# Exponents of the stored item-based form when none are configured. They
# measured best for it on MovieLens ml-latest-small (nDCG@10 0.350 served,
# against 0.306 with the online path's tuned exponents; docs/quality.md).
ITEM_MODEL_EXPONENTS = {"SIMILARITY_ALPHA": "0.5", "SIMILARITY_BETA": "0.5", "USER_WEIGHT_EXPONENT": "0.5"}
ITEM_MODEL_BASE = ModelConfig(alpha=0.5, beta=0.5, user_weight_exponent=0.5, overlap_exponent=1.0)


def similarity_config(
    neighbours_per_item: int = DEFAULT_NEIGHBOURS_PER_ITEM, base: ModelConfig | None = None
) -> ModelConfig:
    """Return the config of the pruned item-based form: ``base``'s exponents, p = 1 and N.

    ``alpha``, ``beta`` and ``user_weight_exponent`` come from ``base`` (default
    ``ITEM_MODEL_BASE``).
    """
    if (
        isinstance(neighbours_per_item, bool)
        or not isinstance(neighbours_per_item, int)
        or not 1 <= neighbours_per_item <= MAX_NEIGHBOURS_PER_ITEM
    ):
        raise ValueError(
            f"neighbours_per_item must be an integer from 1 to {MAX_NEIGHBOURS_PER_ITEM},"
            f" got {neighbours_per_item!r}"
        )
    return replace(
        base or ITEM_MODEL_BASE, overlap_exponent=1.0, neighbours_per_item=neighbours_per_item
    )


def _check_config(config: ModelConfig) -> int:
    if config.neighbours_per_item is None:
        raise ValueError(
            "the model needs config.neighbours_per_item set; build the config with"
            " similarity_config(N)"
        )
    return config.neighbours_per_item


def _sorted_neighbours(row: Mapping[str, float]) -> list[tuple[str, float]]:
    return sorted(row.items(), key=lambda pair: (-pair[1], pair[0]))


# --------------------------------------------------------------------------- grouping


def group_by_user(
    interactions: Iterable[InteractionRecord], max_items_per_user: int | None = None
) -> UserItems:
    """Group the log by user.

    Ids are deduplicated in memory, so a log of millions of rows keeps one
    string per distinct id. With ``max_items_per_user``, only each user's that
    many newest items (by their newest timestamp, ties by item id) are kept.
    That bounds the ``|H_u| ** 2`` pairs a heavy user adds, but it also changes
    ``|H_u|`` and ``pop_i``, so the model then describes the truncated log.
    """
    if max_items_per_user is not None and (
        isinstance(max_items_per_user, bool)
        or not isinstance(max_items_per_user, int)
        or max_items_per_user < 1
    ):
        raise ValueError(
            f"max_items_per_user must be an integer of at least 1 or None, got {max_items_per_user!r}"
        )

    ids: dict[str, str] = {}
    # Without a cap a list per user is enough (the index drops repeats), which
    # takes far less memory than a dict of timestamps.
    histories: dict[str, list[str]] = defaultdict(list)
    newest: dict[str, dict[str, int]] = defaultdict(dict)
    rows = 0
    for record in interactions:
        user_id, item_id = record[0], record[1]
        if not isinstance(user_id, str) or not user_id:
            raise ModelInputError(
                f"interaction {rows + 1} has user_id {user_id!r}; every row needs a non-empty"
                " string user_id"
            )
        if not isinstance(item_id, str) or not item_id:
            raise ModelInputError(
                f"interaction {rows + 1} (user {user_id!r}) has item_id {item_id!r}; every row"
                " needs a non-empty string item_id"
            )
        rows += 1
        user_id = ids.setdefault(user_id, user_id)
        item_id = ids.setdefault(item_id, item_id)
        if max_items_per_user is None:
            histories[user_id].append(item_id)
            continue
        timestamp = record[3]
        seen = newest[user_id]
        previous = seen.get(item_id)
        if previous is None or timestamp > previous:
            seen[item_id] = timestamp

    if max_items_per_user is None:
        return UserItems(items_by_user=dict(histories), interactions=rows)

    items_by_user: dict[str, list[str]] = {}
    truncated = 0
    for user_id, seen in newest.items():
        if len(seen) > max_items_per_user:
            kept = heapq.nsmallest(
                max_items_per_user, seen.items(), key=lambda pair: (-pair[1], pair[0])
            )
            items_by_user[user_id] = [item_id for item_id, _ in kept]
            truncated += 1
        else:
            items_by_user[user_id] = list(seen)
    return UserItems(items_by_user=items_by_user, interactions=rows, truncated_users=truncated)


# --------------------------------------------------------------------------- model


class ItemModel:
    """The similarity model of one log, with neighbour rows computed on demand.

    Rows come from ``CooccurrenceIndex.similarity_row``.
    NOTE: the index keeps every computed row (already pruned to N) until the
    model is dropped, so a full pass holds about N entries per item in memory;
    docs/model.md has the measured peak.
    """

    def __init__(self, user_items: UserItems, config: ModelConfig) -> None:
        self.neighbours_per_item = _check_config(config)
        self.config = config
        self.index = CooccurrenceIndex(user_items.items_by_user, config)
        self.interactions = user_items.interactions
        self.truncated_users = user_items.truncated_users
        self.item_ids: list[str] = sorted(self.index.item_users)

    @property
    def users(self) -> int:
        """Number of users with at least one item."""
        return len(self.index.user_items)

    def popularity(self, item_id: str) -> int:
        """Return the number of users of the log with the item (0 for an unknown item)."""
        return self.index.popularity(item_id)

    def neighbours(self, item_id: str) -> list[tuple[str, float]]:
        """Return the item's N most similar items as (item_id, sim), best first, ties by id."""
        return _sorted_neighbours(self.index.similarity_row(item_id))

    def items(self) -> Iterator[ModelItem]:
        """Yield every item of the log in ascending id order, computing its row on the way."""
        for item_id in self.item_ids:
            yield ModelItem(item_id, self.popularity(item_id), self.neighbours(item_id))

    def most_popular(self, limit: int = POPULAR_ITEMS) -> list[tuple[str, int]]:
        """Return the ``limit`` items with the most users as (item_id, users), ties by item id."""
        return most_popular(
            ((item_id, len(users)) for item_id, users in self.index.item_users.items()), limit
        )


def build_item_model(
    interactions: Iterable[InteractionRecord],
    config: ModelConfig,
    *,
    max_items_per_user: int | None = None,
) -> ItemModel:
    """Group the log by user and index it; neighbour rows are computed as ``items()`` runs.

    ``config`` must set ``neighbours_per_item`` (see ``similarity_config``).
    """
    _check_config(config)
    return ItemModel(group_by_user(interactions, max_items_per_user), config)


def most_popular(
    popularity: Iterable[tuple[str, int]], limit: int = POPULAR_ITEMS
) -> list[tuple[str, int]]:
    """Return the ``limit`` pairs with the largest count, ties going to the smaller item id."""
    return heapq.nsmallest(limit, popularity, key=lambda pair: (-pair[1], pair[0]))


# --------------------------------------------------------------------------- map/reduce


def map_user(items: Collection[str], config: ModelConfig) -> Iterator[tuple[str, str, float]]:
    """Map step of one user: emit ``(i, j, 1 / |H_u| ** q)`` for each ordered pair i != j.

    ``items`` is the user's history; repeated items count once, as in
    ``CooccurrenceIndex``. A user with n distinct items emits n * (n - 1) pairs.
    """
    distinct = sorted(set(items))
    if not distinct:
        return
    weight = 1.0 / len(distinct) ** config.user_weight_exponent
    for item_id in distinct:
        for other_item in distinct:
            if other_item != item_id:
                yield item_id, other_item, weight


def reduce_item(
    item_id: str,
    contributions: Iterable[tuple[str, float]],
    popularity: Mapping[str, int],
    config: ModelConfig,
) -> list[tuple[str, float]]:
    """Reduce step of item i: sum the (j, weight) pairs, normalise and keep the top N.

    ``popularity`` maps each item to its number of users, which is the second
    aggregate of the log (a count per item). It must cover i and every j. The
    result is sorted by similarity, best first, ties by item id.
    """
    neighbours_per_item = _check_config(config)
    cooccurrence: dict[str, float] = defaultdict(float)
    for other_item, weight in contributions:
        cooccurrence[other_item] += weight
    item_norm = popularity[item_id] ** config.alpha
    row = {
        other_item: count / (item_norm * popularity[other_item] ** config.beta)
        for other_item, count in cooccurrence.items()
    }
    return heapq.nsmallest(neighbours_per_item, row.items(), key=lambda pair: (-pair[1], pair[0]))


def item_popularity(items_by_user: Mapping[str, Collection[str]]) -> dict[str, int]:
    """Count the distinct users of each item."""
    counts: dict[str, int] = defaultdict(int)
    for items in items_by_user.values():
        for item_id in set(items):
            counts[item_id] += 1
    return dict(counts)


def neighbours_by_map_reduce(
    items_by_user: Mapping[str, Collection[str]], config: ModelConfig
) -> dict[str, list[tuple[str, float]]]:
    """Run ``map_user`` and ``reduce_item`` in memory; items without a co-occurring item are absent.

    Users are mapped in ascending id order, so each item's sums run in the same
    order as in ``CooccurrenceIndex`` and give the same floating-point values.
    """
    _check_config(config)
    shuffled: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for user_id in sorted(items_by_user):
        for item_id, other_item, weight in map_user(items_by_user[user_id], config):
            shuffled[item_id].append((other_item, weight))
    popularity = item_popularity(items_by_user)
    return {
        item_id: reduce_item(item_id, contributions, popularity, config)
        for item_id, contributions in shuffled.items()
    }


# --------------------------------------------------------------------------- encoding


def _dump(value: object) -> str:
    # Compact JSON; floats are written as Python's shortest repr, which reads
    # back to the same value, and non-ASCII ids stay one UTF-8 sequence each.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_neighbours(
    neighbours: Sequence[tuple[str, float]], max_bytes: int = MAX_NEIGHBOURS_BYTES
) -> tuple[str, int]:
    """Encode a neighbour list as a JSON string ``[["j",sim],...]``; return it and its length kept.

    When the whole list is over ``max_bytes`` of UTF-8, the longest prefix that
    fits is kept, so the most similar items survive. About ``len(id) + 25``
    bytes per neighbour: with 10-byte ids N = 100 is about 3.5 KB.
    """
    pairs = [[item_id, float(similarity)] for item_id, similarity in neighbours]
    encoded = _dump(pairs)
    if len(encoded.encode("utf-8")) <= max_bytes:
        return encoded, len(pairs)

    # Binary search for the longest prefix that fits.
    low, high = 0, len(pairs)
    while low < high:
        middle = (low + high + 1) // 2
        if len(_dump(pairs[:middle]).encode("utf-8")) <= max_bytes:
            low = middle
        else:
            high = middle - 1
    return _dump(pairs[:low]), low


def decode_neighbours(text: str) -> list[tuple[str, float]]:
    """Decode what ``encode_neighbours`` wrote; raise ModelFormatError for anything else."""
    return [(item_id, float(value)) for item_id, value in _decode_pairs(text, "neighbour list")]


def encode_popular(popular: Sequence[tuple[str, int]]) -> str:
    """Encode the most-popular list as a JSON string ``[["i",users],...]``."""
    return _dump([[item_id, int(users)] for item_id, users in popular])


def decode_popular(text: str) -> list[tuple[str, int]]:
    """Decode what ``encode_popular`` wrote; raise ModelFormatError for anything else."""
    pairs = _decode_pairs(text, "popular list")
    if any(isinstance(value, float) for _, value in pairs):
        raise ModelFormatError(f"popular list has a non-integer user count: {text[:80]!r}")
    return [(item_id, int(value)) for item_id, value in pairs]


def _decode_pairs(text: object, what: str) -> list[tuple[str, int | float]]:
    if not isinstance(text, str):
        raise ModelFormatError(f"{what} must be a JSON string, got {type(text).__name__}")
    try:
        document = json.loads(text)
    except ValueError as error:
        raise ModelFormatError(f"{what} is not valid JSON ({error}): {text[:80]!r}") from None
    if not isinstance(document, list):
        raise ModelFormatError(f"{what} must be a JSON array, got {text[:80]!r}")
    pairs: list[tuple[str, int | float]] = []
    for entry in document:
        if (
            not isinstance(entry, list)
            or len(entry) != 2
            or not isinstance(entry[0], str)
            or isinstance(entry[1], bool)
            or not isinstance(entry[1], (int, float))
        ):
            raise ModelFormatError(
                f"{what} entries must be [item_id, number] pairs, found {entry!r}"
            )
        pairs.append((entry[0], entry[1]))
    return pairs
