"""The recommendation core against brute-force computations of the formula in its docstring.

The oracles below recompute the model from its definition, pair by pair and
user by user, on small random logs: they share no code with src/recommender.py
beyond the data classes.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence

import pytest

from recommender import (
    CooccurrenceIndex,
    Interaction,
    ModelConfig,
    Recommendation,
    recommend_from_index,
    recommend_from_neighbourhood,
    score_by_user_walk,
    score_items,
    seed_contributions,
    select_neighbours,
    select_seed_items,
    user_affinities,
)

DAY = 86_400
ALL = 10_000  # a top_k larger than any catalogue below, to see every score

# --------------------------------------------------------------------------- oracles


def random_log(rng: random.Random, users: int = 12, items: int = 15) -> dict[str, list[str]]:
    log: dict[str, list[str]] = {}
    for user in range(users):
        size = rng.randint(1, items // 2)
        log[f"u{user:02d}"] = rng.sample([f"i{item:02d}" for item in range(items)], size)
    return log


def brute_force_scores(
    log: Mapping[str, Sequence[str]], affinities: Mapping[str, float], config: ModelConfig
) -> dict[str, float]:
    """score_j = (sum_u [j in H_u] o_tu ** p / |H_u| ** q) / pop_j ** beta, per the docstring."""
    histories = {user: set(items) for user, items in log.items() if items}
    popularity: dict[str, int] = {}
    for items in histories.values():
        for item in items:
            popularity[item] = popularity.get(item, 0) + 1

    scores: dict[str, float] = {}
    for candidate, candidate_popularity in popularity.items():
        if candidate in affinities:
            continue
        total = 0.0
        for items in histories.values():
            if candidate not in items:
                continue
            overlap = sum(
                affinity / popularity[seed] ** config.alpha
                for seed, affinity in affinities.items()
                if affinity > 0 and seed in items
            )
            if overlap > 0:
                total += (
                    overlap**config.overlap_exponent / len(items) ** config.user_weight_exponent
                )
        score = total / candidate_popularity**config.beta
        if score > 0:
            scores[candidate] = score
    return scores


def brute_force_similarity(
    log: Mapping[str, Sequence[str]], config: ModelConfig
) -> dict[str, dict[str, float]]:
    """sim_ij = C_ij / (pop_i ** alpha * pop_j ** beta), C_ij summed pair by pair, then pruned."""
    histories = {user: set(items) for user, items in log.items() if items}
    items = sorted({item for history in histories.values() for item in history})
    popularity = {item: sum(item in history for history in histories.values()) for item in items}
    rows: dict[str, dict[str, float]] = {}
    for first in items:
        row: dict[str, float] = {}
        for second in items:
            if second == first:
                continue
            cooccurrence = sum(
                1.0 / len(history) ** config.user_weight_exponent
                for history in histories.values()
                if first in history and second in history
            )
            if cooccurrence > 0:
                row[second] = cooccurrence / (
                    popularity[first] ** config.alpha * popularity[second] ** config.beta
                )
        if config.neighbours_per_item is not None:
            ordered = sorted(row.items(), key=lambda pair: (-pair[1], pair[0]))
            row = dict(ordered[: config.neighbours_per_item])
        rows[first] = row
    return rows


def item_based_scores(
    rows: Mapping[str, Mapping[str, float]], affinities: Mapping[str, float]
) -> dict[str, float]:
    scores: dict[str, float] = {}
    for seed, affinity in affinities.items():
        for item, similarity in rows.get(seed, {}).items():
            if item not in affinities:
                scores[item] = scores.get(item, 0.0) + affinity * similarity
    return {item: score for item, score in scores.items() if score > 0}


def random_config(rng: random.Random, overlap_exponent: float | None = None) -> ModelConfig:
    return ModelConfig(
        alpha=rng.choice([0.0, 0.25, 0.5, 1.0]),
        beta=rng.choice([0.0, 0.35, 0.5, 1.0]),
        user_weight_exponent=rng.choice([0.0, 0.5, 1.2]),
        overlap_exponent=(
            overlap_exponent if overlap_exponent is not None else rng.choice([1.0, 1.5, 2.0, 3.0])
        ),
    )


def as_scores(ranked: Sequence[Recommendation]) -> dict[str, float]:
    return {recommendation.item_id: recommendation.score for recommendation in ranked}


def assert_same_scores(actual: Mapping[str, float], expected: Mapping[str, float]) -> None:
    assert set(actual) == set(expected)
    for item, score in expected.items():
        assert actual[item] == pytest.approx(score, rel=1e-9), item


def assert_ranked(ranked: Sequence[Recommendation]) -> None:
    """Descending score, ties by ascending item id."""
    for first, second in itertools.pairwise(ranked):
        assert first.score > second.score or (
            first.score == second.score and first.item_id < second.item_id
        ), (first, second)


def random_affinities(rng: random.Random, log: Mapping[str, Sequence[str]]) -> dict[str, float]:
    catalogue = sorted({item for items in log.values() for item in items})
    seeds = rng.sample(catalogue, rng.randint(1, min(5, len(catalogue))))
    return {seed: rng.choice([0.5, 1.0, 2.0, 3.0]) for seed in seeds}


# --------------------------------------------------------------------------- scoring formula


@pytest.mark.parametrize("seed", range(40))
def test_user_walk_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    log = random_log(rng)
    config = random_config(rng)
    affinities = random_affinities(rng, log)

    ranked = score_by_user_walk(CooccurrenceIndex(log, config), affinities, ALL)

    assert_same_scores(as_scores(ranked), brute_force_scores(log, affinities, config))
    assert_ranked(ranked)


@pytest.mark.parametrize("seed", range(40))
def test_one_pass_and_rows_agree_when_item_based(seed: int) -> None:
    rng = random.Random(1000 + seed)
    log = random_log(rng)
    config = random_config(rng, overlap_exponent=1.0)
    affinities = random_affinities(rng, log)
    index = CooccurrenceIndex(log, config)

    walk = score_by_user_walk(index, affinities, ALL)
    rows = score_items(affinities, {item: index.similarity_row(item) for item in affinities}, ALL)
    expected = item_based_scores(brute_force_similarity(log, config), affinities)

    assert_same_scores(as_scores(walk), expected)
    assert_same_scores(as_scores(rows), expected)


@pytest.mark.parametrize("seed", range(30))
def test_pruned_rows_match_brute_force(seed: int) -> None:
    rng = random.Random(2000 + seed)
    log = random_log(rng)
    config = ModelConfig(
        alpha=rng.choice([0.0, 0.5]),
        beta=rng.choice([0.0, 0.5]),
        user_weight_exponent=rng.choice([0.0, 0.5]),
        overlap_exponent=1.0,
        neighbours_per_item=rng.randint(1, 4),
    )
    index = CooccurrenceIndex(log, config)
    expected_rows = brute_force_similarity(log, config)

    for item in sorted(expected_rows):
        row = index.similarity_row(item)
        assert len(row) <= config.neighbours_per_item
        assert_same_scores(row, expected_rows[item])


def test_pruning_changes_the_ranking() -> None:
    # Row a: b 3, c 2, d 1 (the target). Row d: c 2, a 1 (the target).
    log = {
        "u1": ["a", "b"],
        "u2": ["a", "b"],
        "u3": ["a", "b"],
        "u4": ["c", "d"],
        "u5": ["c", "d"],
        "u6": ["a", "c"],
        "u7": ["a", "c"],
        "t": ["a", "d"],
    }
    history = [Interaction("a"), Interaction("d")]
    unpruned = ModelConfig(alpha=0, beta=0, user_weight_exponent=0, overlap_exponent=1)
    pruned = ModelConfig(
        alpha=0, beta=0, user_weight_exponent=0, overlap_exponent=1, neighbours_per_item=1
    )

    full = recommend_from_index(CooccurrenceIndex(log, unpruned), history, ["a", "d"], ALL)
    top_one = recommend_from_index(CooccurrenceIndex(log, pruned), history, ["a", "d"], ALL)

    # Unpruned: c = 2 (from a) + 2 (from d), b = 3. Pruned: a keeps only b, d keeps only c.
    assert [(rec.item_id, rec.score) for rec in full] == [("c", 4.0), ("b", 3.0)]
    assert [(rec.item_id, rec.score) for rec in top_one] == [("b", 3.0), ("c", 2.0)]


def test_overlap_exponent_favours_close_users() -> None:
    # u_close shares both seeds, u_far one; each brings one different candidate.
    log = {"u_close": ["a", "b", "x"], "u_far1": ["a", "y"], "u_far2": ["b", "y"], "t": ["a", "b"]}
    history = [Interaction("a"), Interaction("b")]
    base = {"alpha": 0.0, "beta": 0.0, "user_weight_exponent": 0.0}

    linear = recommend_from_index(
        CooccurrenceIndex(log, ModelConfig(**base, overlap_exponent=1)), history, ["a", "b"], ALL
    )
    squared = recommend_from_index(
        CooccurrenceIndex(log, ModelConfig(**base, overlap_exponent=2)), history, ["a", "b"], ALL
    )

    # p = 1: x gets 2 (one user sharing 2 seeds), y gets 1 + 1. p = 2: x gets 4, y 1 + 1.
    assert as_scores(linear) == {"x": 2.0, "y": 2.0}
    assert as_scores(squared) == {"x": 4.0, "y": 2.0}


@pytest.mark.parametrize("seed", range(20))
def test_seed_contributions_add_up_to_scores(seed: int) -> None:
    rng = random.Random(3000 + seed)
    log = random_log(rng)
    config = random_config(rng)
    affinities = random_affinities(rng, log)
    index = CooccurrenceIndex(log, config)
    scores = as_scores(score_by_user_walk(index, affinities, ALL))

    shares = seed_contributions(index, affinities, list(scores))

    for item, score in scores.items():
        assert set(shares[item]) <= set(affinities)
        assert sum(shares[item].values()) == pytest.approx(score, rel=1e-9)


def test_seed_contributions_item_based_are_affinity_times_similarity() -> None:
    config = ModelConfig(alpha=0.5, beta=0.5, user_weight_exponent=0.5, overlap_exponent=1)
    log = {"u1": ["a", "b", "x"], "u2": ["a", "x"], "u3": ["b", "x", "y"], "t": ["a", "b"]}
    affinities = {"a": 2.0, "b": 1.0}
    index = CooccurrenceIndex(log, config)
    rows = brute_force_similarity(log, config)

    shares = seed_contributions(index, affinities, ["x", "a"])

    assert shares["x"]["a"] == pytest.approx(2.0 * rows["a"]["x"])
    assert shares["x"]["b"] == pytest.approx(1.0 * rows["b"]["x"])
    assert shares["a"] == {}


# --------------------------------------------------------------------------- exclusions and order


@pytest.mark.parametrize("seed", range(20))
def test_seen_and_excluded_items_never_recommended(seed: int) -> None:
    rng = random.Random(4000 + seed)
    log = random_log(rng)
    config = random_config(rng)
    target = "u00"
    history = [Interaction(item, timestamp=rng.randint(0, 100)) for item in log[target]]
    seeds = [row.item_id for row in history[: max(1, len(history) // 2)]]
    catalogue = sorted({item for items in log.values() for item in items})
    exclude = set(rng.sample(catalogue, 3))
    neighbours = {user: items for user, items in log.items() if user != target}

    ranked = recommend_from_neighbourhood(target, history, seeds, neighbours, config, ALL, exclude)

    recommended = {recommendation.item_id for recommendation in ranked}
    assert not recommended & set(log[target])
    assert not recommended & exclude


def test_ties_go_to_smaller_item_id() -> None:
    log = {"u1": ["a", "z"], "u2": ["a", "m"], "u3": ["a", "b"], "t": ["a"]}
    config = ModelConfig()

    ranked = recommend_from_index(CooccurrenceIndex(log, config), [Interaction("a")], ["a"], 2)

    assert [recommendation.item_id for recommendation in ranked] == ["b", "m"]
    assert ranked[0].score == ranked[1].score


def test_result_independent_of_input_order() -> None:
    rng = random.Random(7)
    log = random_log(rng, users=20, items=25)
    shuffled = dict(reversed(list(log.items())))
    for items in shuffled.values():
        rng.shuffle(items)
    config = random_config(rng)
    affinities = random_affinities(rng, log)

    first = score_by_user_walk(CooccurrenceIndex(log, config), affinities, 10)
    second = score_by_user_walk(CooccurrenceIndex(shuffled, config), affinities, 10)

    assert first == second


def test_neighbourhood_equals_index_on_same_log() -> None:
    rng = random.Random(11)
    log = random_log(rng)
    config = random_config(rng)
    history = [Interaction(item, timestamp=index) for index, item in enumerate(log["u03"])]
    seeds = [row.item_id for row in history]
    neighbours = {user: items for user, items in log.items() if user != "u03"}

    online = recommend_from_neighbourhood("u03", history, seeds, neighbours, config, 5)
    offline = recommend_from_index(CooccurrenceIndex(log, config), history, seeds, 5)

    assert online == offline


def test_only_seeds_give_affinity() -> None:
    log = {"u1": ["a", "x"], "u2": ["b", "y"], "t": ["a", "b"]}
    history = [Interaction("a", timestamp=2), Interaction("b", timestamp=1)]

    ranked = recommend_from_index(CooccurrenceIndex(log, ModelConfig()), history, ["a"], ALL)

    assert [recommendation.item_id for recommendation in ranked] == ["x"]


@pytest.mark.parametrize("top_k", [0, -1, 1.5, True])
def test_invalid_top_k_rejected(top_k: object) -> None:
    index = CooccurrenceIndex({"u1": ["a", "b"]}, ModelConfig())

    with pytest.raises(ValueError, match="top_k"):
        score_by_user_walk(index, {"a": 1.0}, top_k)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="top_k"):
        score_items({"a": 1.0}, {}, top_k)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- affinity


def test_event_weights_per_interaction_type() -> None:
    config = ModelConfig(event_weights={"view": 1.0, "purchase": 3.0}, default_event_weight=0.5)
    history = [
        Interaction("a", interaction_type="view"),
        Interaction("b", interaction_type="purchase"),
        Interaction("c", interaction_type="share"),
        Interaction("a", interaction_type="purchase"),
    ]

    affinities = user_affinities(history, config)

    assert affinities == {"a": 4.0, "b": 3.0, "c": 0.5}


def test_rating_as_weight_multiplies() -> None:
    history = [
        Interaction("a", interaction_type="rating", weight=4.0),
        Interaction("b", interaction_type="rating", weight=None),
        Interaction("c", interaction_type="rating", weight=-2.0),
    ]

    plain = user_affinities(history, ModelConfig())
    weighted = user_affinities(history, ModelConfig(rating_as_weight=True))

    assert plain == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert weighted == {"a": 4.0, "b": 1.0, "c": 0.0}


def test_time_decay_halves_per_half_life() -> None:
    config = ModelConfig(half_life_days=10.0)
    now = 100 * DAY
    history = [
        Interaction("new", timestamp=now),
        Interaction("ten_days", timestamp=now - 10 * DAY),
        Interaction("twenty_days", timestamp=now - 20 * DAY),
        Interaction("future", timestamp=now + 5 * DAY),
    ]

    affinities = user_affinities(history, config, now=now)

    assert affinities["new"] == pytest.approx(1.0)
    assert affinities["ten_days"] == pytest.approx(0.5)
    assert affinities["twenty_days"] == pytest.approx(0.25)
    assert affinities["future"] == pytest.approx(1.0)


def test_time_decay_defaults_to_newest_interaction() -> None:
    config = ModelConfig(half_life_days=1.0)
    history = [Interaction("a", timestamp=5 * DAY), Interaction("b", timestamp=4 * DAY)]

    affinities = user_affinities(history, config)

    assert affinities == {"a": pytest.approx(1.0), "b": pytest.approx(0.5)}


def test_time_decay_changes_ranking() -> None:
    log = {"u1": ["old", "x"], "u2": ["new", "y"], "t": ["old", "new"]}
    history = [Interaction("old", timestamp=0), Interaction("new", timestamp=30 * DAY)]
    base = {"alpha": 0.0, "beta": 0.0, "user_weight_exponent": 0.0, "overlap_exponent": 1.0}

    no_decay = recommend_from_index(
        CooccurrenceIndex(log, ModelConfig(**base)), history, ["old", "new"], ALL
    )
    decayed = recommend_from_index(
        CooccurrenceIndex(log, ModelConfig(**base, half_life_days=10.0)),
        history,
        ["old", "new"],
        ALL,
    )

    assert as_scores(no_decay) == {"x": 1.0, "y": 1.0}
    assert as_scores(decayed) == {"y": pytest.approx(1.0), "x": pytest.approx(0.125)}


def test_repeated_interactions_sum_in_fixed_order() -> None:
    # 0.1 + 0.2 + 0.3 differs in the last bit from 0.3 + 0.2 + 0.1 in floating point.
    history = [
        Interaction("a", timestamp=1, interaction_type="rating", weight=0.1),
        Interaction("a", timestamp=2, interaction_type="rating", weight=0.2),
        Interaction("a", timestamp=3, interaction_type="rating", weight=0.3),
    ]
    config = ModelConfig(rating_as_weight=True)

    forward = user_affinities(history, config)
    backward = user_affinities(list(reversed(history)), config)

    assert forward == backward


def test_empty_history_has_no_affinity() -> None:
    assert user_affinities([], ModelConfig()) == {}


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("options", "field_name"),
    [
        ({"alpha": -0.1}, "alpha"),
        ({"beta": 2.5}, "beta"),
        ({"user_weight_exponent": math.nan}, "user_weight_exponent"),
        ({"overlap_exponent": 4.5}, "overlap_exponent"),
        ({"overlap_exponent": -1.0}, "overlap_exponent"),
        ({"neighbours_per_item": 0, "overlap_exponent": 1.0}, "neighbours_per_item"),
        ({"neighbours_per_item": 2.5, "overlap_exponent": 1.0}, "neighbours_per_item"),
        ({"neighbours_per_item": 10, "overlap_exponent": 2.0}, "overlap_exponent"),
        ({"half_life_days": 0.0}, "half_life_days"),
        ({"half_life_days": math.inf}, "half_life_days"),
        ({"default_event_weight": -1.0}, "default_event_weight"),
        ({"event_weights": {"view": -1.0}}, "event_weights"),
        ({"event_weights": {"view": math.nan}}, "event_weights"),
        ({"event_weights": {"": 1.0}}, "event_weights"),
    ],
)
def test_invalid_config_rejected(options: dict[str, object], field_name: str) -> None:
    with pytest.raises(ValueError, match=field_name):
        ModelConfig(**options)  # type: ignore[arg-type]


def test_default_config_is_valid() -> None:
    config = ModelConfig()

    assert config.overlap_exponent == 2.0
    assert config.neighbours_per_item is None


# --------------------------------------------------------------------------- request helpers


def test_seed_items_are_newest_with_id_ties() -> None:
    history = [
        Interaction("c", timestamp=5),
        Interaction("a", timestamp=9),
        Interaction("b", timestamp=5),
        Interaction("d", timestamp=1),
    ]

    seeds = select_seed_items(history, 3)

    assert [row.item_id for row in seeds] == ["a", "b", "c"]


def test_neighbours_ranked_by_shared_seeds() -> None:
    item_users = {"a": ["t", "u2", "u1"], "b": ["u1", "u3"], "c": ["u3", "u1"]}

    neighbours = select_neighbours(item_users, "t", 2)

    # u1 shares 3 seeds, u3 shares 2, u2 shares 1; the target never counts.
    assert neighbours == ["u1", "u3"]


def test_blend_rankings_scales_to_best_score() -> None:
    from recommender import Recommendation, blend_rankings

    model = [Recommendation("a", 10.0), Recommendation("b", 5.0)]
    online = [Recommendation("c", 0.2), Recommendation("b", 0.1)]

    blended = blend_rankings([(model, 3.0), (online, 1.0)], 3)

    # a: 3 * 1; b: 3 * 0.5 + 1 * 0.5; c: 1 * 1.
    assert [(rec.item_id, rec.score) for rec in blended] == [("a", 3.0), ("b", 2.0), ("c", 1.0)]


def test_blend_rankings_skips_empty_lists() -> None:
    from recommender import Recommendation, blend_rankings

    only = [Recommendation("x", 4.0), Recommendation("y", 2.0)]

    assert blend_rankings([(only, 1.0), ([], 5.0), ([Recommendation("z", 9.0)], 0.0)], 5) == [
        Recommendation("x", 1.0),
        Recommendation("y", 0.5),
    ]
    with pytest.raises(ValueError, match="top_k"):
        blend_rankings([(only, 1.0)], 0)
