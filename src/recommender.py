"""Item-based collaborative filtering core: pure Python, no AWS imports.

The request path and the offline evaluation both call these functions, so the
quality measured offline is the quality the service computes.

Model, for a target user t with history H_t:

1. Affinity. Each interaction of t gets ``a_ti = event_weight(type, weight) * decay(age)``,
   where ``decay = 0.5 ** (age / half_life)`` when a half-life is set.
2. Co-occurrence. Over the users u of the log, each weighted by their activity
   ``w_u = 1 / |H_u| ** user_weight_exponent``::

       C_ij = sum over users u with i and j in H_u of w_u

   Damping very active users keeps one heavy user from linking every pair of items.
3. Similarity, normalised by the popularity ``pop_i`` (number of users with the item)
   of both items, so that an item does not win by being popular alone::

       sim_ij = C_ij / (pop_i ** alpha * pop_j ** beta)

   ``alpha = beta = 0.5`` with no user weighting is the cosine similarity. A larger
   ``beta`` favours rarer candidates. Optionally only the ``neighbours_per_item``
   largest similarities of each item i are kept.
4. Score and rank::

       score_j = sum over i in H_t of a_ti * sim_ij,   for j not in H_t

   Items are ranked by descending score, ties broken by ascending item id, so the
   output is deterministic.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

SECONDS_PER_DAY = 86_400

DEFAULT_EVENT_WEIGHTS: Mapping[str, float] = {
    "view": 1.0,
    "click": 1.0,
    "rating": 1.0,
    "add_to_cart": 2.0,
    "purchase": 3.0,
}


@dataclass(frozen=True)
class Interaction:
    """One row of a user's history, as the scoring needs it."""

    item_id: str
    timestamp: int = 0
    interaction_type: str = "interaction"
    weight: float | None = None


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float


@dataclass(frozen=True)
class ModelConfig:
    """Parameters of the model in the module docstring.

    ``event_weights`` maps ``interaction_type`` to a weight; types not listed get
    ``default_event_weight``. With ``rating_as_weight`` the interaction's own
    ``weight`` attribute (for example a 1-5 rating) multiplies the event weight.
    ``half_life_days`` of None turns time decay off.
    """

    alpha: float = 0.5
    beta: float = 0.5
    user_weight_exponent: float = 0.5
    neighbours_per_item: int | None = None
    event_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    default_event_weight: float = 1.0
    rating_as_weight: bool = False
    half_life_days: float | None = None

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "user_weight_exponent"):
            value = getattr(self, name)
            if not 0.0 <= value <= 2.0:
                raise ValueError(f"{name} must be between 0 and 2, got {value!r}")
        if self.neighbours_per_item is not None and self.neighbours_per_item < 1:
            raise ValueError(
                f"neighbours_per_item must be at least 1 or None, got {self.neighbours_per_item!r}"
            )
        if self.half_life_days is not None and self.half_life_days <= 0:
            raise ValueError(f"half_life_days must be positive or None, got {self.half_life_days!r}")
        if self.default_event_weight < 0 or any(w < 0 for w in self.event_weights.values()):
            raise ValueError("event weights must not be negative")


def user_affinities(
    history: Iterable[Interaction], config: ModelConfig, now: int | None = None
) -> dict[str, float]:
    """Compute the affinity of one user for each item of their history.

    Repeated interactions with one item add up. ``now`` (epoch seconds) is the
    reference time for the decay; by default the newest interaction's timestamp,
    so that replaying an old log gives the same scores as at the time.
    """
    interactions = list(history)
    if not interactions:
        return {}
    if now is None:
        now = max(interaction.timestamp for interaction in interactions)

    affinities: dict[str, float] = defaultdict(float)
    for interaction in interactions:
        weight = config.event_weights.get(interaction.interaction_type, config.default_event_weight)
        if config.rating_as_weight and interaction.weight is not None:
            weight *= max(interaction.weight, 0.0)
        if config.half_life_days is not None:
            age_days = max(now - interaction.timestamp, 0) / SECONDS_PER_DAY
            weight *= 0.5 ** (age_days / config.half_life_days)
        affinities[interaction.item_id] += weight
    return dict(affinities)


class CooccurrenceIndex:
    """Item-to-users index of an interaction log, for computing similarity rows.

    ``user_items`` maps each user id to the items they interacted with. The log
    can be the whole table (offline) or the sample of users that the request
    path read (online); popularity is counted within that log.
    """

    def __init__(self, user_items: Mapping[str, Collection[str]], config: ModelConfig) -> None:
        self.config = config
        self.user_items: dict[str, tuple[str, ...]] = {}
        self.user_weight: dict[str, float] = {}
        self.item_users: dict[str, list[str]] = defaultdict(list)

        for user_id in sorted(user_items):
            items = tuple(sorted(set(user_items[user_id])))
            if not items:
                continue
            self.user_items[user_id] = items
            self.user_weight[user_id] = 1.0 / len(items) ** config.user_weight_exponent
            for item_id in items:
                self.item_users[item_id].append(user_id)

    def popularity(self, item_id: str) -> int:
        return len(self.item_users.get(item_id, ()))

    def similarity_row(self, item_id: str) -> dict[str, float]:
        """Compute ``sim_ij`` for one item i against every item j that co-occurs with it."""
        users = self.item_users.get(item_id)
        if not users:
            return {}

        cooccurrence: dict[str, float] = defaultdict(float)
        for user_id in users:
            user_weight = self.user_weight[user_id]
            for other_item in self.user_items[user_id]:
                cooccurrence[other_item] += user_weight
        del cooccurrence[item_id]

        config = self.config
        item_norm = len(users) ** config.alpha
        row = {
            other_item: count / (item_norm * len(self.item_users[other_item]) ** config.beta)
            for other_item, count in cooccurrence.items()
        }
        if config.neighbours_per_item is not None and len(row) > config.neighbours_per_item:
            kept = heapq.nsmallest(
                config.neighbours_per_item, row.items(), key=lambda pair: (-pair[1], pair[0])
            )
            row = dict(kept)
        return row


def score_items(
    affinities: Mapping[str, float],
    similarity_rows: Mapping[str, Mapping[str, float]],
    top_k: int,
    exclude: Collection[str] = (),
) -> list[Recommendation]:
    """Rank candidates by ``sum_i affinity_i * sim_ij`` and return the best ``top_k``.

    Items in ``affinities`` (the user's history) and in ``exclude`` are never
    returned. Only items with a positive score are candidates.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k!r}")

    scores: dict[str, float] = defaultdict(float)
    # Sorted seeds make the floating-point sums, and so the ranking, repeatable.
    for seed_item in sorted(affinities):
        affinity = affinities[seed_item]
        if affinity <= 0:
            continue
        for item_id, similarity in similarity_rows.get(seed_item, {}).items():
            scores[item_id] += affinity * similarity

    candidates = (
        (item_id, score)
        for item_id, score in scores.items()
        if score > 0 and item_id not in affinities and item_id not in exclude
    )
    best = heapq.nsmallest(top_k, candidates, key=lambda pair: (-pair[1], pair[0]))
    return [Recommendation(item_id, score) for item_id, score in best]


def select_seed_items(history: Sequence[Interaction], max_items: int) -> list[Interaction]:
    """Keep the ``max_items`` newest interactions (ties by item id) as scoring seeds."""
    ordered = sorted(history, key=lambda row: (-row.timestamp, row.item_id))
    return ordered[:max_items]


def select_neighbours(
    item_users: Mapping[str, Sequence[str]], target_user: str, max_neighbours: int
) -> list[str]:
    """Pick the users who share the most of the seed items with the target user.

    ``item_users`` maps each seed item to the users read for it, newest first.
    Ties go to the user seen earliest in that order, then to the smaller id.
    """
    overlap: dict[str, int] = defaultdict(int)
    first_seen: dict[str, int] = {}
    position = 0
    for item_id in sorted(item_users):
        for user_id in item_users[item_id]:
            if user_id == target_user:
                continue
            overlap[user_id] += 1
            first_seen.setdefault(user_id, position)
            position += 1
    ranked = sorted(overlap, key=lambda user_id: (-overlap[user_id], first_seen[user_id], user_id))
    return ranked[:max_neighbours]


def recommend_from_neighbourhood(
    target_user: str,
    history: Sequence[Interaction],
    seed_items: Collection[str],
    neighbour_histories: Mapping[str, Collection[str]],
    config: ModelConfig,
    top_k: int,
    exclude: Collection[str] = (),
) -> list[Recommendation]:
    """Score candidates from the target's history and a sample of other users' items.

    This is the online form of the model: co-occurrence and popularity are
    counted over the target user and the neighbours that the request read, and
    only ``seed_items`` contribute affinity. Every item of ``history`` is
    excluded from the result, seeds or not.
    """
    user_items: dict[str, Collection[str]] = dict(neighbour_histories)
    user_items[target_user] = [row.item_id for row in history]
    index = CooccurrenceIndex(user_items, config)

    seeds = set(seed_items)
    affinities = user_affinities((row for row in history if row.item_id in seeds), config)
    seen = {row.item_id for row in history}
    if config.neighbours_per_item is not None:
        rows = {item_id: index.similarity_row(item_id) for item_id in affinities}
        return score_items(affinities, rows, top_k, exclude=seen.union(exclude))
    return score_by_user_walk(index, affinities, top_k, exclude=seen.union(exclude))


def score_by_user_walk(
    index: CooccurrenceIndex,
    affinities: Mapping[str, float],
    top_k: int,
    exclude: Collection[str] = (),
) -> list[Recommendation]:
    """Compute the same scores as ``score_items`` on unpruned rows, in one pass over users.

    Regrouping the sums by user gives::

        score_j = sum over users u with j of
                  w_u * (sum over i in H_u, i != j of a_ti / pop_i ** alpha) / pop_j ** beta

    so each user's items are visited once instead of once per seed item they
    share. It applies only without ``neighbours_per_item`` pruning, which needs
    whole rows.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k!r}")
    config = index.config

    seed_weight = {
        item_id: affinity / index.popularity(item_id) ** config.alpha
        for item_id, affinity in affinities.items()
        if affinity > 0 and index.popularity(item_id) > 0
    }
    users = sorted({user_id for item_id in seed_weight for user_id in index.item_users[item_id]})

    sums: dict[str, float] = defaultdict(float)
    for user_id in users:
        items = index.user_items[user_id]
        user_seed_weight = sum(seed_weight.get(item_id, 0.0) for item_id in items)
        flow = index.user_weight[user_id] * user_seed_weight
        for item_id in items:
            # A seed never co-occurs with itself: remove its own share.
            sums[item_id] += flow - index.user_weight[user_id] * seed_weight.get(item_id, 0.0)

    candidates = (
        (item_id, total / index.popularity(item_id) ** config.beta)
        for item_id, total in sums.items()
        if item_id not in affinities and item_id not in exclude
    )
    best = heapq.nsmallest(
        top_k,
        ((item_id, score) for item_id, score in candidates if score > 0),
        key=lambda pair: (-pair[1], pair[0]),
    )
    return [Recommendation(item_id, score) for item_id, score in best]
