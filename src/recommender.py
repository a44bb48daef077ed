"""Collaborative filtering core on co-occurrence statistics: pure Python, no AWS imports.

The request path and the offline evaluation both call these functions, so the
quality measured offline is the quality the service computes.

Model, for a target user t with history H_t, over a log of users u with
histories H_u (the whole table offline, the users that a request read online):

1. Affinity. Each interaction of t gets
   ``a_ti = event_weight(type) * decay(age)``, summed over repeated interactions
   with one item (see ``user_affinities``).
2. Weighted overlap of t with each user u of the log, where ``pop_i`` is the
   number of users of the log with item i::

       o_tu = sum over i in H_t and H_u of a_ti / pop_i ** alpha

3. Score each item j that t has not seen::

       score_j = (sum over users u with j in H_u of o_tu ** p / |H_u| ** q) / pop_j ** beta

   with ``p = overlap_exponent`` and ``q = user_weight_exponent``.
4. Rank by descending score, ties broken by ascending item id, so the output is
   deterministic.

With ``p = 1`` the sums regroup into the item-based form::

    score_j = sum over i in H_t of a_ti * sim_ij
    sim_ij  = C_ij / (pop_i ** alpha * pop_j ** beta)
    C_ij    = sum over users u with i and j in H_u of 1 / |H_u| ** q

so ``alpha = beta = 0.5, q = 0`` is the cosine similarity and
``alpha = beta = q = 0`` counts raw co-occurrences. ``p > 1`` gives the users
who share many (rarely shared) items with t more weight than the sum of
their item pairs would, as a user-based nearest-neighbour model does, but
without a hard cut-off. The item-based form is the one that pruning each item
to its ``neighbours_per_item`` most similar items applies to.

``score_by_user_walk`` computes step 3 in one pass over the users who share a
seed; ``score_items`` computes the item-based form from similarity rows.
"""

from __future__ import annotations

import heapq
import math
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

# Accepted ranges of the exponents. Outside them a model either ignores or
# inverts what the exponent is meant to penalise.
MAX_NORMALISATION_EXPONENT = 2.0
MAX_OVERLAP_EXPONENT = 4.0


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

    - ``alpha``: exponent of the popularity of a shared (seed) item. Larger
      values let rarely shared items count more as evidence of similar taste.
    - ``beta``: exponent of the popularity of a candidate. Larger values favour
      rarer candidates, 0 leaves popular items unpenalised.
    - ``user_weight_exponent`` (q): users with long histories link every pair of
      items, so each user's contribution is divided by ``|H_u| ** q``.
    - ``overlap_exponent`` (p): 1 is the item-based model, larger values
      concentrate the score on the users closest to the target.
    - ``neighbours_per_item``: keep only this many most similar items per seed
      item (item-based form only, so it requires ``overlap_exponent == 1``);
      None keeps all.
    - ``event_weights``: weight per ``interaction_type``; types not listed get
      ``default_event_weight``.
    - ``rating_as_weight``: multiply the event weight by the interaction's own
      ``weight`` attribute (for example a 1-5 rating).
    - ``half_life_days``: affinity halves every this many days of age; None
      turns time decay off.

    The defaults were chosen by measurement on MovieLens latest-small (100,836
    ratings) with the evaluation in ``tools.evaluate``, see docs/quality.md.
    """

    alpha: float = 0.5
    beta: float = 0.35
    user_weight_exponent: float = 1.2
    overlap_exponent: float = 2.0
    neighbours_per_item: int | None = None
    event_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    default_event_weight: float = 1.0
    rating_as_weight: bool = False
    half_life_days: float | None = None

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "user_weight_exponent"):
            _check_range(name, getattr(self, name), 0.0, MAX_NORMALISATION_EXPONENT)
        _check_range("overlap_exponent", self.overlap_exponent, 0.0, MAX_OVERLAP_EXPONENT)

        if self.neighbours_per_item is not None:
            if isinstance(self.neighbours_per_item, bool) or not isinstance(
                self.neighbours_per_item, int
            ):
                raise ValueError(
                    "neighbours_per_item must be an integer or None,"
                    f" got {self.neighbours_per_item!r}"
                )
            if self.neighbours_per_item < 1:
                raise ValueError(
                    "neighbours_per_item must be at least 1 or None,"
                    f" got {self.neighbours_per_item!r}"
                )
            if self.overlap_exponent != 1.0:
                raise ValueError(
                    "neighbours_per_item prunes the item-based form, which needs overlap_exponent"
                    f" 1, got {self.overlap_exponent!r}: set overlap_exponent to 1 or"
                    " neighbours_per_item to None"
                )

        if self.half_life_days is not None and not (
            math.isfinite(self.half_life_days) and self.half_life_days > 0
        ):
            raise ValueError(
                "half_life_days must be a positive number of days or None,"
                f" got {self.half_life_days!r}"
            )
        _check_event_weight("default_event_weight", self.default_event_weight)
        for interaction_type, weight in self.event_weights.items():
            if not isinstance(interaction_type, str) or not interaction_type:
                raise ValueError(
                    "event_weights keys must be non-empty interaction types,"
                    f" got {interaction_type!r}"
                )
            _check_event_weight(f"event_weights[{interaction_type!r}]", weight)


def _check_range(name: str, value: float, low: float, high: float) -> None:
    # The negated comparison also rejects NaN.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be a number between {low} and {high}, got {value!r}")


def _check_event_weight(name: str, weight: float) -> None:
    if (
        isinstance(weight, bool)
        or not isinstance(weight, (int, float))
        or not math.isfinite(weight)
        or weight < 0
    ):
        raise ValueError(f"{name} must be a finite number of at least 0, got {weight!r}")


def event_weight(interaction: Interaction, config: ModelConfig) -> float:
    """Return the weight of one interaction before time decay.

    The weight of its ``interaction_type`` from ``config.event_weights`` (else
    ``default_event_weight``), times its own ``weight`` when
    ``config.rating_as_weight`` is set; a negative own weight counts as 0.
    """
    weight = config.event_weights.get(interaction.interaction_type, config.default_event_weight)
    if config.rating_as_weight and interaction.weight is not None:
        weight *= max(interaction.weight, 0.0)
    return weight


def user_affinities(
    history: Iterable[Interaction], config: ModelConfig, now: int | None = None
) -> dict[str, float]:
    """Compute the affinity of one user for each item of their history.

    ``a_ti = event_weight * 0.5 ** (age_days / half_life_days)``, the decay
    applying only when ``half_life_days`` is set. Repeated interactions with one
    item add up. ``now`` (epoch seconds) is the reference time of the decay. It
    defaults to the newest interaction's timestamp, so that replaying an old
    log gives the same scores as at the time. Interactions newer than ``now``
    get age 0.
    """
    interactions = list(history)
    if not interactions:
        return {}
    if now is None:
        now = max(interaction.timestamp for interaction in interactions)

    affinities: dict[str, float] = defaultdict(float)
    # Repeated interactions with one item are added in an order fixed by their
    # content, so that a reordered history gives bit-identical affinities.
    for interaction in sorted(interactions, key=_content_order):
        weight = event_weight(interaction, config)
        if config.half_life_days is not None:
            age_days = max(now - interaction.timestamp, 0) / SECONDS_PER_DAY
            weight *= 0.5 ** (age_days / config.half_life_days)
        affinities[interaction.item_id] += weight
    return dict(affinities)


def _content_order(interaction: Interaction) -> tuple[str, int, str, float]:
    weight = interaction.weight if interaction.weight is not None else -math.inf
    return (interaction.item_id, interaction.timestamp, interaction.interaction_type, weight)


class CooccurrenceIndex:
    """Item-to-users index of an interaction log, the statistics the model counts on.

    ``user_items`` maps each user id to the items they interacted with. The log
    can be the whole table (offline) or the sample of users that the request
    path read (online); popularity is counted within that log. Users are stored
    in ascending id order, so every sum over them runs in one fixed order.
    """

    def __init__(self, user_items: Mapping[str, Collection[str]], config: ModelConfig) -> None:
        self.config = config
        self.user_items: dict[str, tuple[str, ...]] = {}
        self.user_weight: dict[str, float] = {}
        self.item_users: dict[str, list[str]] = defaultdict(list)
        # Similarity rows already computed, kept for the life of the index
        # because the evaluation reuses one index for every user.
        self._rows: dict[str, dict[str, float]] = {}

        for user_id in sorted(user_items):
            items = tuple(sorted(set(user_items[user_id])))
            if not items:
                continue
            self.user_items[user_id] = items
            self.user_weight[user_id] = 1.0 / len(items) ** config.user_weight_exponent
            for item_id in items:
                self.item_users[item_id].append(user_id)

    def popularity(self, item_id: str) -> int:
        """Return ``pop_i``, the number of users of the log with the item."""
        return len(self.item_users.get(item_id, ()))

    def similarity_row(self, item_id: str) -> dict[str, float]:
        """Compute ``sim_ij`` of the item-based form for one item i against every co-occurring j.

        With ``neighbours_per_item`` set, only that many largest similarities are
        kept, ties going to the smaller item id.
        """
        cached = self._rows.get(item_id)
        if cached is not None:
            return cached
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
        self._rows[item_id] = row
        return row


def _top_k(
    scores: Iterable[tuple[str, float]], top_k: int, excluded: Collection[str]
) -> list[Recommendation]:
    candidates = (
        (item_id, score) for item_id, score in scores if score > 0 and item_id not in excluded
    )
    best = heapq.nsmallest(top_k, candidates, key=lambda pair: (-pair[1], pair[0]))
    return [Recommendation(item_id, score) for item_id, score in best]


def _check_top_k(top_k: int) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer of at least 1, got {top_k!r}")


def score_items(
    affinities: Mapping[str, float],
    similarity_rows: Mapping[str, Mapping[str, float]],
    top_k: int,
    exclude: Collection[str] = (),
) -> list[Recommendation]:
    """Rank candidates by ``sum_i affinity_i * sim_ij`` and return the best ``top_k``.

    This is the item-based form (``overlap_exponent == 1``). Items in
    ``affinities`` (the user's history) and in ``exclude`` are never returned.
    Only items with a positive score are candidates.
    """
    _check_top_k(top_k)

    scores: dict[str, float] = defaultdict(float)
    # Sorted seeds make the floating-point sums, and so the ranking, repeatable.
    for seed_item in sorted(affinities):
        affinity = affinities[seed_item]
        if affinity <= 0:
            continue
        for item_id, similarity in similarity_rows.get(seed_item, {}).items():
            scores[item_id] += affinity * similarity

    excluded = set(affinities).union(exclude)
    return _top_k(scores.items(), top_k, excluded)


def user_overlaps(index: CooccurrenceIndex, affinities: Mapping[str, float]) -> dict[str, float]:
    """Compute ``o_tu = sum_i a_ti / pop_i ** alpha`` for every user u sharing a seed i.

    Seeds with no positive affinity or absent from the log are skipped. The
    target user, when in the log, is among the users returned.
    """
    alpha = index.config.alpha
    overlaps: dict[str, float] = defaultdict(float)
    for item_id in sorted(affinities):
        affinity = affinities[item_id]
        users = index.item_users.get(item_id)
        if affinity <= 0 or not users:
            continue
        seed_weight = affinity / len(users) ** alpha
        for user_id in users:
            overlaps[user_id] += seed_weight
    return dict(overlaps)


def score_by_user_walk(
    index: CooccurrenceIndex,
    affinities: Mapping[str, float],
    top_k: int,
    exclude: Collection[str] = (),
) -> list[Recommendation]:
    """Compute step 3 of the module docstring in one pass over the users who share a seed.

    Each such user u passes ``o_tu ** p / |H_u| ** q`` to every item of H_u, so
    each user's items are visited once, whatever the number of seeds they
    share. Without pruning and with ``p = 1`` the scores equal those of
    ``score_items`` on the index's similarity rows. Items in ``affinities`` and
    in ``exclude`` are never returned; neither is an item of score 0.
    """
    _check_top_k(top_k)
    overlap_exponent = index.config.overlap_exponent
    overlaps = user_overlaps(index, affinities)

    sums: dict[str, float] = defaultdict(float)
    for user_id in sorted(overlaps):
        flow = index.user_weight[user_id] * overlaps[user_id] ** overlap_exponent
        for item_id in index.user_items[user_id]:
            sums[item_id] += flow

    beta = index.config.beta
    excluded = set(affinities).union(exclude)
    scores = (
        (item_id, total / len(index.item_users[item_id]) ** beta)
        for item_id, total in sums.items()
        if item_id not in excluded
    )
    return _top_k(scores, top_k, ())


def seed_contributions(
    index: CooccurrenceIndex, affinities: Mapping[str, float], item_ids: Iterable[str]
) -> dict[str, dict[str, float]]:
    """Split the score of each of ``item_ids`` among the seeds that led to it.

    Seed i gets ``a_ti / pop_i ** alpha * sum over users u with i and j of
    o_tu ** (p - 1) / |H_u| ** q``, divided by ``pop_j ** beta``. Because
    ``o_tu`` is the sum of those seed weights, the shares of one item add up to
    its ``score_j``; with ``p = 1`` a share is ``a_ti * sim_ij``. Items that are
    seeds themselves, or that no seed reaches, map to an empty dict.
    """
    config = index.config
    overlaps = user_overlaps(index, affinities)
    seed_weight = {
        item_id: affinity / index.popularity(item_id) ** config.alpha
        for item_id, affinity in affinities.items()
        if affinity > 0 and index.popularity(item_id) > 0
    }

    contributions: dict[str, dict[str, float]] = {}
    for item_id in item_ids:
        shares: dict[str, float] = defaultdict(float)
        if item_id not in affinities:
            for user_id in index.item_users.get(item_id, ()):
                overlap = overlaps.get(user_id, 0.0)
                if overlap <= 0:
                    continue
                flow = index.user_weight[user_id] * overlap ** (config.overlap_exponent - 1.0)
                for seed in index.user_items[user_id]:
                    if seed in seed_weight:
                        shares[seed] += flow * seed_weight[seed]
        candidate_norm = index.popularity(item_id) ** config.beta
        contributions[item_id] = {seed: share / candidate_norm for seed, share in shares.items()}
    return contributions


def recommend_from_index(
    index: CooccurrenceIndex,
    history: Sequence[Interaction],
    seed_items: Collection[str],
    top_k: int,
    exclude: Collection[str] = (),
) -> list[Recommendation]:
    """Score candidates for a user from their history and a prepared log.

    Only the interactions of ``history`` whose item is in ``seed_items``
    contribute affinity; every item of ``history`` is excluded from the result,
    seeds or not. With ``neighbours_per_item`` set, the pruned item-based form
    is used, otherwise the one-pass user walk.
    """
    config = index.config
    seeds = set(seed_items)
    affinities = user_affinities((row for row in history if row.item_id in seeds), config)
    excluded = {row.item_id for row in history}.union(exclude)
    if config.neighbours_per_item is not None:
        rows = {item_id: index.similarity_row(item_id) for item_id in affinities}
        return score_items(affinities, rows, top_k, exclude=excluded)
    return score_by_user_walk(index, affinities, top_k, exclude=excluded)


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

    This is the online form of the model: popularity and overlaps are counted
    over the target user and the neighbours that the request read. See
    ``recommend_from_index`` for seeds and exclusions.
    """
    user_items: dict[str, Collection[str]] = dict(neighbour_histories)
    user_items[target_user] = [row.item_id for row in history]
    index = CooccurrenceIndex(user_items, config)
    return recommend_from_index(index, history, seed_items, top_k, exclude)


def scale_rankings(
    rankings: Sequence[tuple[Sequence[Recommendation], float]],
) -> list[dict[str, float]]:
    """Put ranked lists whose scores are on different scales on one scale.

    Each entry is (ranking, weight). A ranking's scores are divided by its best
    score, so that each list spans (0, 1], and then multiplied by its weight.
    A ranking that is empty, or has a weight or best score of 0 or less, gives
    an empty dict.
    """
    scaled: list[dict[str, float]] = []
    for ranking, weight in rankings:
        best = max((rec.score for rec in ranking), default=0.0)
        if weight <= 0 or best <= 0:
            scaled.append({})
            continue
        scaled.append({rec.item_id: weight * rec.score / best for rec in ranking})
    return scaled


def blend_rankings(
    rankings: Sequence[tuple[Sequence[Recommendation], float]], top_k: int
) -> list[Recommendation]:
    """Merge ranked lists into one list of ``top_k``, each scaled by ``scale_rankings``.

    An item in several lists adds its parts. The service weights a list by the
    share of the user's seed affinity behind it.
    """
    _check_top_k(top_k)
    blended: dict[str, float] = defaultdict(float)
    for scores in scale_rankings(rankings):
        for item_id, score in scores.items():
            blended[item_id] += score
    return _top_k(blended.items(), top_k, ())
