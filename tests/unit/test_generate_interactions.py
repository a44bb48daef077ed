"""tools/generate_interactions.py: a seeded, skewed log that the loader accepts as it is."""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tools.generate_interactions import (
    INTERACTION_TYPES,
    GeneratorError,
    GeneratorSettings,
    generate_rows,
    main,
    write_csv,
)
from tools.interaction_formats import ParsedRow, RejectedRow, read_csv

SETTINGS = GeneratorSettings(interactions=5000, items=400, seed=11)


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"

    write_csv(SETTINGS, first)
    write_csv(SETTINGS, second)
    write_csv(GeneratorSettings(interactions=5000, items=400, seed=12), other)

    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_loader_accepts_every_row(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    report = write_csv(SETTINGS, path)

    rows = list(read_csv(io.StringIO(path.read_text(encoding="utf-8"))))

    assert report.rows == 5000
    assert len(rows) == 5000
    assert not [row for row in rows if isinstance(row, RejectedRow)]
    assert not (tmp_path / "log.csv.part").exists()


def test_histories_distinct_and_ordered() -> None:
    histories: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for user_id, item_id, _, timestamp, _ in generate_rows(SETTINGS):
        histories[user_id].append((item_id, timestamp))

    for user_id, history in histories.items():
        items = [item_id for item_id, _ in history]
        times = [timestamp for _, timestamp in history]
        assert len(items) == len(set(items)), user_id
        assert times == sorted(times), user_id
        assert all(
            SETTINGS.end_timestamp - SETTINGS.days * 86_400 <= moment <= SETTINGS.end_timestamp
            for moment in times
        ), user_id


def test_popularity_and_history_skewed() -> None:
    rows = list(generate_rows(GeneratorSettings(interactions=20_000, items=2000, seed=3)))
    per_item = sorted(Counter(row[1] for row in rows).values(), reverse=True)
    per_user = sorted(Counter(row[0] for row in rows).values(), reverse=True)

    # Zipf with s = 1: the top item gets far more than the median one.
    assert per_item[0] > 20 * per_item[len(per_item) // 2]
    # Log-normal lengths: the longest history is many times the median.
    assert per_user[0] > 10 * per_user[len(per_user) // 2]


def test_types_and_weights() -> None:
    rows = list(generate_rows(SETTINGS))
    types = Counter(row[2] for row in rows)

    assert set(types) == set(INTERACTION_TYPES)
    assert types["view"] > types["purchase"]
    for _, _, interaction_type, _, weight in rows:
        if interaction_type == "rating":
            assert weight in {"1", "2", "3", "4", "5"}
        else:
            assert weight == ""


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("interactions", 0),
        ("items", 1),
        ("zipf_exponent", -1.0),
        ("median_history", 0.5),
        ("history_sigma", float("nan")),
        ("max_history", 0),
        ("days", 0.0),
    ],
)
def test_invalid_setting_named(field: str, value: float) -> None:
    settings = GeneratorSettings(**{"interactions": 10, field: value})  # type: ignore[arg-type]

    with pytest.raises(GeneratorError, match=field):
        list(generate_rows(settings))


def test_cli_writes_file(tmp_path: Path) -> None:
    path = tmp_path / "cli.csv"

    code = main(["--interactions", "300", "--output", str(path), "--items", "50"])

    assert code == 0
    assert sum(1 for _ in read_csv(io.StringIO(path.read_text(encoding="utf-8")))) == 300
    assert all(
        isinstance(row, ParsedRow)
        for row in read_csv(io.StringIO(path.read_text(encoding="utf-8")))
    )


def test_cli_rejects_bad_setting(tmp_path: Path) -> None:
    assert main(["--interactions", "0", "--output", str(tmp_path / "x.csv")]) == 2
