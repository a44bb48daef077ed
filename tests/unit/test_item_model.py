"""src/item_model.py: neighbour lists, the map/reduce split, the popular list and the encoding."""

from __future__ import annotations

import json
import math
import random
from collections import Counter, defaultdict

import pytest

from item_model import (
    MAX_NEIGHBOURS_BYTES,
    MAX_NEIGHBOURS_PER_ITEM,
    InteractionRecord,
    ModelFormatError,
    ModelInputError,
    build_item_model,
    decode_neighbours,
    decode_popular,
    encode_neighbours,
    encode_popular,
    group_by_user,
    map_user,
    neighbours_by_map_reduce,
    reduce_item,
    similarity_config,
)
from recommender import CooccurrenceIndex, ModelConfig

# Exponent sets of the item-based form: the defaults, cosine (q = 0) and raw counts.
EXPONENTS = [
    {},
    {"alpha": 0.5, "beta": 0.5, "user_weight_exponent": 0.0},
    {"alpha": 0.0, "beta": 0.0, "user_weight_exponent": 0.0},
]


def random_log(
    seed: int, rows: int = 400, users: int = 40, items: int = 60
) -> list[InteractionRecord]:
    """A log with skewed item popularity, repeated (user, item) pairs and several types."""
    rng = random.Random(seed)
    log = []
    for row in range(rows):
        item = min(int(rng.paretovariate(1.1)), items)
        log.append(
            InteractionRecord(
                user_id=f"u{rng.randrange(users)}",
                item_id=f"i{item:03d}",
                interaction_type=rng.choice(["view", "purchase", "rating"]),
                timestamp=1_700_000_000 + row,
                weight=None,
            )
        )
    return log


def user_item_sets(log: list[InteractionRecord]) -> dict[str, set[str]]:
    histories: dict[str, set[str]] = defaultdict(set)
    for record in log:
        histories[record.user_id].add(record.item_id)
    return histories


def expected_row(index: CooccurrenceIndex, item_id: str) -> list[tuple[str, float]]:
    return sorted(index.similarity_row(item_id).items(), key=lambda pair: (-pair[1], pair[0]))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("neighbours", [1, 5, 1000])
def test_neighbours_equal_core_rows(seed: int, neighbours: int) -> None:
    log = random_log(seed)
    config = similarity_config(neighbours, ModelConfig(**EXPONENTS[seed % len(EXPONENTS)]))
    reference = CooccurrenceIndex(user_item_sets(log), config)

    model = build_item_model(log, config)

    assert model.item_ids == sorted(reference.item_users)
    for item_id in model.item_ids:
        assert model.neighbours(item_id) == expected_row(reference, item_id), item_id
        assert model.popularity(item_id) == reference.popularity(item_id), item_id


def test_similarity_of_hand_computed_log() -> None:
    # u1 {a, b}, u2 {a, b, c}, u3 {b, c}, cosine (alpha = beta = 0.5, q = 0):
    # C_ab = 2, pop_a = 2, pop_b = 3: sim_ab = 2 / sqrt(6); C_ac = 1, pop_c = 2: sim_ac = 1 / 2.
    log = [
        InteractionRecord("u1", "a"),
        InteractionRecord("u1", "b"),
        InteractionRecord("u2", "a"),
        InteractionRecord("u2", "b"),
        InteractionRecord("u2", "c"),
        InteractionRecord("u3", "b"),
        InteractionRecord("u3", "c"),
    ]
    config = similarity_config(10, ModelConfig(alpha=0.5, beta=0.5, user_weight_exponent=0.0))

    model = build_item_model(log, config)

    neighbours = model.neighbours("a")
    assert [item_id for item_id, _ in neighbours] == ["b", "c"]
    assert neighbours[0][1] == pytest.approx(2 / math.sqrt(6))
    assert neighbours[1][1] == pytest.approx(0.5)
    assert model.popularity("b") == 3


def test_rows_pruned_to_n_with_ties_by_id() -> None:
    # One user with four items: every pair has the same similarity, so ids break the ties.
    log = [InteractionRecord("u1", item_id) for item_id in ("d", "c", "b", "a")]

    model = build_item_model(log, similarity_config(2))

    assert [item_id for item_id, _ in model.neighbours("c")] == ["a", "b"]


@pytest.mark.parametrize("seed", range(6))
def test_map_reduce_equals_direct(seed: int) -> None:
    log = random_log(seed, rows=300)
    config = similarity_config(3 + seed, ModelConfig(**EXPONENTS[seed % len(EXPONENTS)]))
    histories = user_item_sets(log)
    direct = CooccurrenceIndex(histories, config)

    distributed = neighbours_by_map_reduce(histories, config)

    for item_id in direct.item_users:
        expected = expected_row(direct, item_id)
        computed = distributed.get(item_id, [])
        assert [pair[0] for pair in computed] == [pair[0] for pair in expected], item_id
        assert [pair[1] for pair in computed] == pytest.approx([pair[1] for pair in expected]), (
            item_id
        )


def test_map_user_emits_ordered_pairs() -> None:
    config = similarity_config(5, ModelConfig(user_weight_exponent=1.0))

    pairs = list(map_user(["b", "a", "b", "c"], config))

    assert len(pairs) == 6  # 3 distinct items, 3 * 2 ordered pairs
    assert ("a", "b", pytest.approx(1 / 3)) in pairs
    assert ("b", "a", pytest.approx(1 / 3)) in pairs
    assert all(left != right for left, right, _ in pairs)


def test_reduce_item_normalises_by_popularity() -> None:
    config = similarity_config(5, ModelConfig(alpha=1.0, beta=0.0, user_weight_exponent=0.0))

    row = reduce_item("a", [("b", 1.0), ("b", 1.0), ("c", 1.0)], {"a": 4, "b": 9, "c": 1}, config)

    assert row == [("b", pytest.approx(0.5)), ("c", pytest.approx(0.25))]


def test_popular_list_top_100_ties_by_id() -> None:
    rng = random.Random(7)
    log = [
        InteractionRecord(f"u{rng.randrange(300)}", f"i{rng.randrange(160)}") for _ in range(3000)
    ]
    users_per_item = Counter(item for items in user_item_sets(log).values() for item in items)
    expected = sorted(users_per_item.items(), key=lambda pair: (-pair[1], pair[0]))[:100]

    popular = build_item_model(log, similarity_config(5)).most_popular()

    assert popular == expected
    assert len(popular) == 100


def test_popular_ties_go_to_smaller_id() -> None:
    log = [InteractionRecord("u1", "z"), InteractionRecord("u2", "y"), InteractionRecord("u3", "x")]

    popular = build_item_model(log, similarity_config(5)).most_popular(2)

    assert popular == [("x", 1), ("y", 1)]


def test_group_by_user_keeps_newest_items() -> None:
    log = [
        InteractionRecord("u1", "old", timestamp=10),
        InteractionRecord("u1", "new", timestamp=30),
        InteractionRecord("u1", "mid", timestamp=20),
        InteractionRecord("u1", "old", timestamp=40),  # a repeat makes "old" the newest
        InteractionRecord("u2", "only", timestamp=5),
    ]

    grouped = group_by_user(log, max_items_per_user=2)

    assert grouped.items_by_user["u1"] == ["old", "new"]
    assert grouped.items_by_user["u2"] == ["only"]
    assert grouped.interactions == 5
    assert grouped.truncated_users == 1


def test_repeated_pairs_count_once() -> None:
    log = [InteractionRecord("u1", "a"), InteractionRecord("u1", "a"), InteractionRecord("u1", "b")]

    model = build_item_model(log, similarity_config(5))

    assert model.popularity("a") == 1
    assert model.interactions == 3
    assert model.users == 1


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (InteractionRecord("", "a"), "user_id"),
        (InteractionRecord("u1", ""), "item_id"),
        (("u1", 7, "view", 0, None), "item_id"),
    ],
)
def test_invalid_ids_rejected(record: tuple[object, ...], field: str) -> None:
    with pytest.raises(ModelInputError, match=field):
        group_by_user([InteractionRecord("u0", "a"), record])  # type: ignore[list-item]


@pytest.mark.parametrize("neighbours", [0, MAX_NEIGHBOURS_PER_ITEM + 1, True, 2.5])
def test_invalid_neighbour_count_rejected(neighbours: object) -> None:
    with pytest.raises(ValueError, match="neighbours_per_item"):
        similarity_config(neighbours)  # type: ignore[arg-type]


def test_model_needs_pruned_config() -> None:
    with pytest.raises(ValueError, match="similarity_config"):
        build_item_model([InteractionRecord("u1", "a")], ModelConfig(overlap_exponent=1.0))


def test_config_keeps_base_exponents() -> None:
    config = similarity_config(7, ModelConfig(alpha=0.3, beta=0.2, user_weight_exponent=0.9))

    assert (config.alpha, config.beta, config.user_weight_exponent) == (0.3, 0.2, 0.9)
    assert config.overlap_exponent == 1.0
    assert config.neighbours_per_item == 7


# --------------------------------------------------------------------------- encoding


def test_neighbours_round_trip_exactly() -> None:
    rng = random.Random(3)
    neighbours = [
        ("plain", 0.1 + 0.2),
        ('quote"and\\backslash', 1e-300),
        ("ünïcødé-🎬", rng.random()),
        ("comma,colon:", 123456.789),
    ]

    encoded, kept = encode_neighbours(neighbours)

    assert kept == len(neighbours)
    assert decode_neighbours(encoded) == neighbours


def test_encoding_is_compact_json() -> None:
    encoded, _ = encode_neighbours([("i1", 0.5), ("i2", 0.25)])

    assert encoded == '[["i1",0.5],["i2",0.25]]'
    assert json.loads(encoded) == [["i1", 0.5], ["i2", 0.25]]


def test_n_of_100_short_ids_is_small() -> None:
    rng = random.Random(5)
    neighbours = [(f"item-{index:05d}", rng.random()) for index in range(100)]

    encoded, _ = encode_neighbours(neighbours)

    # About len(id) + 25 bytes per neighbour, so the list fits in one 4 KB read unit.
    assert len(encoded.encode("utf-8")) < 4096


def test_max_n_with_64_byte_ids_fits() -> None:
    neighbours = [(f"{index:064d}", 0.123456789012345) for index in range(MAX_NEIGHBOURS_PER_ITEM)]

    encoded, kept = encode_neighbours(neighbours)

    assert kept == MAX_NEIGHBOURS_PER_ITEM
    assert len(encoded.encode("utf-8")) <= MAX_NEIGHBOURS_BYTES


def test_oversized_list_keeps_best_prefix() -> None:
    neighbours = [
        (f"{index:01024d}", 1.0 / (index + 1)) for index in range(MAX_NEIGHBOURS_PER_ITEM)
    ]

    encoded, kept = encode_neighbours(neighbours)

    assert 0 < kept < MAX_NEIGHBOURS_PER_ITEM
    assert len(encoded.encode("utf-8")) <= MAX_NEIGHBOURS_BYTES
    assert decode_neighbours(encoded) == neighbours[:kept]
    # One more neighbour would not have fitted.
    assert (
        len(encode_neighbours(neighbours[: kept + 1], 10**9)[0].encode("utf-8"))
        > MAX_NEIGHBOURS_BYTES
    )


def test_popular_round_trip() -> None:
    popular = [("a", 10), ("b", 3)]

    assert decode_popular(encode_popular(popular)) == popular


@pytest.mark.parametrize(
    "text",
    ["not json", '{"a": 1}', '[["a"]]', '[["a", "0.5"]]', "[[1, 0.5]]", '[["a", true]]'],
)
def test_invalid_neighbour_text_rejected(text: str) -> None:
    with pytest.raises(ModelFormatError):
        decode_neighbours(text)


def test_non_string_neighbours_rejected() -> None:
    with pytest.raises(ModelFormatError, match="JSON string"):
        decode_neighbours(None)  # type: ignore[arg-type]


def test_fractional_popularity_rejected() -> None:
    with pytest.raises(ModelFormatError, match="non-integer"):
        decode_popular('[["a", 1.5]]')
