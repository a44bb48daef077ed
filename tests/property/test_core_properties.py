"""Property-based tests of the public contract of src/recommender.py, on random small logs.

Each test draws a target user's history, the seed items, the items of up to six other users,
a model configuration, a result size and excluded items. The properties hold for any model
the module may implement: nothing seen or excluded comes back, the ranking is ordered and
bounded, scores are positive and finite, and the output depends on the input only, not on
its order. The one-pass scoring must also agree with scoring from similarity rows.

Every run is derandomized, so CI runs the same cases each time. PROPERTY_MAX_EXAMPLES raises
the number of cases per test for a longer local run. Each test records the number of cases
it ran as a JUnit test-suite property.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from recommender import (
    DEFAULT_EVENT_WEIGHTS,
    CooccurrenceIndex,
    Interaction,
    ModelConfig,
    Recommendation,
    recommend_from_neighbourhood,
    score_items,
    select_neighbours,
    select_seed_items,
    user_affinities,
)

MAX_EXAMPLES = int(os.environ.get("PROPERTY_MAX_EXAMPLES", "200"))
# Each test must run at least this many cases, so a strategy that filters too much fails.
MIN_EXAMPLES = min(MAX_EXAMPLES, 100)

PROPERTY_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    # The fixture that counts examples is function-scoped on purpose: one count per test.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

TARGET_USER = "target"
# A small pool, so that random histories overlap; it mixes ASCII, digits that sort
# differently as text, and non-ASCII ids.
ITEM_POOL = ("a", "b", "c", "d", "e", "10", "9", "Zz", "é", "ß", "日本")
USER_POOL = ("u1", "u2", "u3", "u4", "u5", "u6", "ü7")
INTERACTION_TYPES = (*DEFAULT_EVENT_WEIGHTS, "unknown-type")

item_ids = st.sampled_from(ITEM_POOL)


@st.composite
def interactions(draw: st.DrawFn, item_id: st.SearchStrategy[str] = item_ids) -> Interaction:
    return Interaction(
        item_id=draw(item_id),
        timestamp=draw(st.integers(min_value=0, max_value=2_000_000_000)),
        interaction_type=draw(st.sampled_from(INTERACTION_TYPES)),
        weight=draw(st.none() | st.floats(min_value=-2.0, max_value=5.0)),
    )


@st.composite
def model_configs(draw: st.DrawFn, *, item_based: bool = False) -> ModelConfig:
    """Draw a valid ModelConfig; `item_based` fixes overlap_exponent 1 and no pruning."""
    exponent = st.floats(min_value=0.0, max_value=2.0)
    if item_based:
        overlap_exponent, neighbours_per_item = 1.0, None
    elif draw(st.booleans()):
        # Pruning applies to the item-based form only.
        overlap_exponent = 1.0
        neighbours_per_item = draw(st.none() | st.integers(min_value=1, max_value=4))
    else:
        overlap_exponent = draw(st.floats(min_value=0.0, max_value=4.0))
        neighbours_per_item = None
    return ModelConfig(
        alpha=draw(exponent),
        beta=draw(exponent),
        user_weight_exponent=draw(exponent),
        overlap_exponent=overlap_exponent,
        neighbours_per_item=neighbours_per_item,
        rating_as_weight=draw(st.booleans()),
        half_life_days=draw(st.none() | st.floats(min_value=0.01, max_value=1000.0)),
    )


@dataclass(frozen=True)
class Scenario:
    """The arguments of one recommend_from_neighbourhood call."""

    history: list[Interaction]
    seed_items: set[str]
    neighbour_histories: dict[str, list[str]]
    config: ModelConfig
    top_k: int
    exclude: set[str]

    def recommend(self) -> list[Recommendation]:
        return recommend_from_neighbourhood(
            TARGET_USER,
            self.history,
            self.seed_items,
            self.neighbour_histories,
            self.config,
            self.top_k,
            exclude=self.exclude,
        )

    @property
    def seen(self) -> set[str]:
        return {row.item_id for row in self.history}


@st.composite
def scenarios(
    draw: st.DrawFn, *, item_based: bool = False, repeated_history: bool = False
) -> Scenario:
    """Draw a small log.

    The history has one row per item, as the table stores it, unless `repeated_history`:
    then up to 8 rows share two items, as in an offline log of repeated interactions.
    """
    if repeated_history:
        rows = st.lists(interactions(st.sampled_from(ITEM_POOL[:2])), min_size=0, max_size=8)
    else:
        rows = st.lists(interactions(), min_size=0, max_size=6, unique_by=lambda row: row.item_id)
    history = draw(rows)
    history_items = sorted({row.item_id for row in history})
    seed_items = draw(st.sets(st.sampled_from(history_items))) if history_items else set()
    neighbour_histories = draw(
        st.dictionaries(
            st.sampled_from(USER_POOL), st.lists(item_ids, min_size=0, max_size=7), max_size=6
        )
    )
    return Scenario(
        history=history,
        seed_items=seed_items,
        neighbour_histories=neighbour_histories,
        config=draw(model_configs(item_based=item_based)),
        top_k=draw(st.integers(min_value=1, max_value=len(ITEM_POOL) + 1)),
        exclude=draw(st.sets(item_ids, max_size=3)),
    )


@pytest.fixture
def examples(
    request: pytest.FixtureRequest, record_testsuite_property: Callable[[str, object], None]
) -> Iterator[list[int]]:
    """Count the examples a property test runs (one element per example); check the count."""
    counted: list[int] = []
    yield counted
    record_testsuite_property(f"{request.node.name} examples", len(counted))
    assert len(counted) >= MIN_EXAMPLES, f"only {len(counted)} examples ran"


def ranking_key(recommendation: Recommendation) -> tuple[float, str]:
    return (-recommendation.score, recommendation.item_id)


# --------------------------------------------------------------------------- recommendations


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_never_recommends_seen_or_excluded(scenario: Scenario, examples: list[int]) -> None:
    examples.append(1)
    item_ids_returned = {rec.item_id for rec in scenario.recommend()}

    assert not item_ids_returned & scenario.seen
    assert not item_ids_returned & scenario.exclude


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_ranked_by_score_then_item_id(scenario: Scenario, examples: list[int]) -> None:
    examples.append(1)
    result = scenario.recommend()
    item_ids_returned = [rec.item_id for rec in result]

    assert [ranking_key(rec) for rec in result] == sorted(ranking_key(rec) for rec in result)
    assert len(set(item_ids_returned)) == len(item_ids_returned)


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_at_most_top_k(scenario: Scenario, examples: list[int]) -> None:
    examples.append(1)

    assert len(scenario.recommend()) <= scenario.top_k


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_scores_positive_and_finite(scenario: Scenario, examples: list[int]) -> None:
    examples.append(1)

    for rec in scenario.recommend():
        assert math.isfinite(rec.score), rec
        assert rec.score > 0, rec


@PROPERTY_SETTINGS
@given(scenario=scenarios())
def test_same_input_same_output(scenario: Scenario, examples: list[int]) -> None:
    examples.append(1)

    assert scenario.recommend() == scenario.recommend()


def _permuted(scenario: Scenario, rng: random.Random) -> tuple[Any, ...]:
    # The same log with every collection in another order: history rows, neighbours,
    # each neighbour's items, seeds and exclusions.
    history = rng.sample(scenario.history, len(scenario.history))
    users = rng.sample(sorted(scenario.neighbour_histories), len(scenario.neighbour_histories))
    neighbour_histories = {
        user: rng.sample(
            scenario.neighbour_histories[user], len(scenario.neighbour_histories[user])
        )
        for user in users
    }
    seed_items = rng.sample(sorted(scenario.seed_items), len(scenario.seed_items))
    exclude = rng.sample(sorted(scenario.exclude), len(scenario.exclude))
    return history, seed_items, neighbour_histories, exclude


@PROPERTY_SETTINGS
@given(scenario=scenarios(), rng=st.randoms(use_true_random=False))
def test_input_order_irrelevant(
    scenario: Scenario, rng: random.Random, examples: list[int]
) -> None:
    examples.append(1)
    history, seed_items, neighbour_histories, exclude = _permuted(scenario, rng)

    permuted = recommend_from_neighbourhood(
        TARGET_USER,
        history,
        seed_items,
        neighbour_histories,
        scenario.config,
        scenario.top_k,
        exclude=exclude,
    )

    assert permuted == scenario.recommend()


# Three ratings of item "a" whose float sum depends on the order of addition:
# (0.1 + 0.2) + 0.3 == 0.6000000000000001, while (0.3 + 0.2) + 0.1 == 0.6.
REPEATED_RATINGS = Scenario(
    history=[
        Interaction("a", 1, "view", 0.1),
        Interaction("a", 2, "view", 0.2),
        Interaction("a", 3, "view", 0.3),
        Interaction("b", 4, "view", 1.0),
    ],
    seed_items={"a", "b"},
    neighbour_histories={"u1": ["a", "c", "b"], "u2": ["a", "d"]},
    config=ModelConfig(rating_as_weight=True),
    top_k=5,
    exclude=set(),
)


@PROPERTY_SETTINGS
@example(scenario=REPEATED_RATINGS, rng=random.Random(0))
@given(scenario=scenarios(repeated_history=True), rng=st.randoms(use_true_random=False))
def test_repeated_interactions_order_irrelevant(scenario: Scenario, rng: random.Random) -> None:
    # A history may list one item several times (offline logs do); their affinities add up.
    # No example count here: the test stops at its first failure while the defect lasts.
    reversed_history = list(reversed(scenario.history))
    history, seed_items, neighbour_histories, exclude = _permuted(scenario, rng)

    reversed_result = recommend_from_neighbourhood(
        TARGET_USER,
        reversed_history,
        scenario.seed_items,
        scenario.neighbour_histories,
        scenario.config,
        scenario.top_k,
        exclude=scenario.exclude,
    )
    permuted = recommend_from_neighbourhood(
        TARGET_USER,
        history,
        seed_items,
        neighbour_histories,
        scenario.config,
        scenario.top_k,
        exclude=exclude,
    )

    assert reversed_result == scenario.recommend()
    assert permuted == scenario.recommend()


def _scores_from_similarity_rows(scenario: Scenario, top_k: int) -> list[Recommendation]:
    # The item-based form of the model docstring, built from public parts: the log is the
    # neighbours plus the target's whole history, and only seed interactions give affinity.
    user_items: dict[str, list[str]] = dict(scenario.neighbour_histories)
    user_items[TARGET_USER] = [row.item_id for row in scenario.history]
    index = CooccurrenceIndex(user_items, scenario.config)
    seed_rows = [row for row in scenario.history if row.item_id in scenario.seed_items]
    affinities = user_affinities(seed_rows, scenario.config)
    rows = {item_id: index.similarity_row(item_id) for item_id in affinities}
    return score_items(affinities, rows, top_k, exclude=scenario.seen | scenario.exclude)


@PROPERTY_SETTINGS
@given(scenario=scenarios(item_based=True))
def test_one_pass_matches_similarity_rows(scenario: Scenario, examples: list[int]) -> None:
    examples.append(1)
    # Every candidate, so that near-equal scores at the cut cannot make the lists differ.
    every_item = len(ITEM_POOL) + 1
    one_pass = recommend_from_neighbourhood(
        TARGET_USER,
        scenario.history,
        scenario.seed_items,
        scenario.neighbour_histories,
        scenario.config,
        every_item,
        exclude=scenario.exclude,
    )
    from_rows = _scores_from_similarity_rows(scenario, every_item)

    one_pass_scores = {rec.item_id: rec.score for rec in one_pass}
    row_scores = {rec.item_id: rec.score for rec in from_rows}
    assert set(one_pass_scores) == set(row_scores)
    for item_id, score in row_scores.items():
        assert math.isclose(one_pass_scores[item_id], score, rel_tol=1e-9), item_id
    # Ranks may swap only between scores that agree to rounding.
    for one_pass_rec, row_rec in zip(one_pass, from_rows, strict=True):
        assert math.isclose(one_pass_rec.score, row_rec.score, rel_tol=1e-9)


# --------------------------------------------------------------------------- building blocks


@PROPERTY_SETTINGS
@given(history=st.lists(interactions(), max_size=8), config=model_configs())
def test_affinities_cover_history(
    history: list[Interaction], config: ModelConfig, examples: list[int]
) -> None:
    examples.append(1)
    affinities = user_affinities(history, config)

    assert set(affinities) == {row.item_id for row in history}
    for item_id, affinity in affinities.items():
        assert math.isfinite(affinity), item_id
        assert affinity >= 0, item_id


@PROPERTY_SETTINGS
@given(
    history=st.lists(interactions(), max_size=8, unique_by=lambda row: row.item_id),
    max_items=st.integers(min_value=1, max_value=10),
)
def test_seed_items_are_newest(
    history: list[Interaction], max_items: int, examples: list[int]
) -> None:
    examples.append(1)
    seeds = select_seed_items(history, max_items)
    kept = {row.item_id for row in seeds}
    left_out = [row for row in history if row.item_id not in kept]

    assert len(seeds) == min(max_items, len(history))
    assert [(-row.timestamp, row.item_id) for row in seeds] == sorted(
        (-row.timestamp, row.item_id) for row in seeds
    )
    for row in left_out:
        assert all(row.timestamp <= seed.timestamp for seed in seeds), row


@PROPERTY_SETTINGS
@given(
    item_users=st.dictionaries(
        item_ids, st.lists(st.sampled_from((*USER_POOL, TARGET_USER)), max_size=6), max_size=6
    ),
    max_neighbours=st.integers(min_value=1, max_value=8),
)
def test_neighbours_share_most_seeds(
    item_users: dict[str, list[str]], max_neighbours: int, examples: list[int]
) -> None:
    examples.append(1)
    neighbours = select_neighbours(item_users, TARGET_USER, max_neighbours)
    overlap = {
        user: sum(users.count(user) for users in item_users.values())
        for users in item_users.values()
        for user in users
    }
    candidates = {user for user in overlap if user != TARGET_USER}

    assert TARGET_USER not in neighbours
    assert len(neighbours) == min(max_neighbours, len(candidates))
    assert len(set(neighbours)) == len(neighbours)
    counts = [overlap[user] for user in neighbours]
    assert counts == sorted(counts, reverse=True)
    left_out = candidates - set(neighbours)
    if neighbours and left_out:
        assert max(overlap[user] for user in left_out) <= min(counts)
