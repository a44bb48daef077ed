"""Pure parts of tools/bench_scale.py: staging the log, probe users, growth and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tools.bench_scale import (
    LogSettings,
    ScaleBenchError,
    WorkDir,
    flatness,
    naive_items_per_scan,
    probe_histories,
    render_section,
    users_in_prefix,
    write_chunk,
)
from tools.generate_interactions import GeneratorSettings, write_csv


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "log.csv"
    write_csv(GeneratorSettings(interactions=3000, items=300, seed=5), path)
    return path


def data_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()[1:]


def test_write_chunk_parts_join_to_log(log_path: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"

    assert write_chunk(log_path, 0, 1000, first) == 1000
    assert write_chunk(log_path, 1000, 3000, second) == 2000

    header = log_path.read_text(encoding="utf-8").splitlines()[0]
    assert first.read_text(encoding="utf-8").splitlines()[0] == header
    assert second.read_text(encoding="utf-8").splitlines()[0] == header
    assert data_lines(first) + data_lines(second) == data_lines(log_path)


def test_generator_longer_log_starts_with_shorter(tmp_path: Path) -> None:
    # The staging relies on this: the first rows of the largest log are each smaller table.
    short, long = tmp_path / "short.csv", tmp_path / "long.csv"
    write_csv(GeneratorSettings(interactions=2000, items=300, seed=9), short)
    write_csv(GeneratorSettings(interactions=6000, items=300, seed=9), long)

    short_rows, long_rows = data_lines(short), data_lines(long)
    last_user = short_rows[-1].split(",", 1)[0]
    complete = [row for row in short_rows if row.split(",", 1)[0] != last_user]
    assert complete == long_rows[: len(complete)]


def test_probe_histories_are_the_first_users(log_path: Path) -> None:
    histories = probe_histories(log_path, 3, 3000)

    rows = [line.split(",") for line in data_lines(log_path)]
    first_users = list(dict.fromkeys(row[0] for row in rows))[:3]
    assert list(histories) == first_users
    for user_id in first_users:
        assert histories[user_id] == [row[1] for row in rows if row[0] == user_id]


def test_probe_users_must_fit_the_smallest_table(log_path: Path) -> None:
    with pytest.raises(ScaleBenchError, match="do not fit"):
        probe_histories(log_path, 50, 20)


def test_users_in_prefix_counts_distinct_users(log_path: Path) -> None:
    rows = [line.split(",")[0] for line in data_lines(log_path)]

    assert users_in_prefix(log_path, 3000) == len(set(rows))
    assert users_in_prefix(log_path, 100) == len(set(rows[:100]))


def test_work_dir_refuses_tables_of_other_settings(tmp_path: Path) -> None:
    work = WorkDir(tmp_path, LogSettings(largest_size=1000, items=50, seed=1))
    state = work.read_state()
    work.write_state(state)

    smaller = WorkDir(tmp_path, LogSettings(largest_size=500, items=50, seed=1))
    assert smaller.read_state()["settings"] == state["settings"]
    for other in (LogSettings(2000, 50, 1), LogSettings(1000, 60, 1), LogSettings(1000, 50, 2)):
        with pytest.raises(ScaleBenchError, match="do not match"):
            WorkDir(tmp_path, other).read_state()


def stats(mean: float) -> dict[str, Any]:
    return {"count": 2, "mean": mean, "median": mean, "p95": None, "min": mean, "max": mean}


def path(items: float, capacity: float, per_user: dict[str, int]) -> dict[str, Any]:
    return {
        "requests": 2,
        "failed": [],
        "sources": {"model": 2},
        "rounds_max": 2,
        "dynamodb_calls": stats(2.0),
        "items_read": stats(items),
        "consumed_capacity": stats(capacity),
        "latency_ms": stats(30.0),
        "per_user_items": per_user,
    }


def stage(size: int, model_items: float, online_items: float) -> dict[str, Any]:
    return {
        "size": size,
        "users": size // 10,
        "build": {"seconds": 1.0, "peak_rss_mb": 100, "summary": {}},
        "model": path(model_items, model_items / 2, {"u1": int(model_items)}),
        "online": path(online_items, online_items / 4, {"u1": int(online_items)}),
        "naive": {
            "measured": [
                {
                    "user_id": "u1",
                    "history_items": 2,
                    "full_scans": 2,
                    "items_read": 2 * size + 2,
                    "consumed_capacity": size / 10,
                    "seconds": 1.0,
                    "problems": [],
                }
            ],
            "cut_short": [],
            "skipped": [],
        },
    }


def test_flatness_holds_only_within_ten_percent() -> None:
    flat = flatness([stage(1000, 100.0, 500.0), stage(10_000, 109.0, 5000.0)])
    grown = flatness([stage(1000, 100.0, 500.0), stage(10_000, 111.0, 5000.0)])

    assert flat["model_items_read"] == [1.0, pytest.approx(1.09)]
    assert flat["online_items_read"] == [1.0, pytest.approx(10.0)]
    assert flat["model_within_10_percent"] is True
    assert grown["model_within_10_percent"] is False


def report_summary(stages: list[dict[str, Any]]) -> dict[str, Any]:
    """Return a run summary around `stages`, as bench_scale.run returns it."""
    return {
        "date": "2026-12-04 00:00 UTC",
        "runtime_s": 10.0,
        "command": "python -m tools.bench_scale",
        "code": "abc1234",
        "machine": {"cpu_cores": 2, "cpu_model": "test CPU", "python": "3.11"},
        "seed": 42,
        "items": 300,
        "naive_budget_s": 60.0,
        "probe_users": {"count": 2, "history_min": 1, "history_median": 2, "history_max": 3},
        "stages": stages,
        "flatness": flatness(stages),
    }


def test_items_per_scan_excludes_history_query() -> None:
    assert naive_items_per_scan(stage(1000, 1.0, 1.0)) == 1000


def test_report_names_sizes_and_the_verdict() -> None:
    summary = report_summary([stage(100_000, 100.0, 500.0), stage(1_000_000, 100.0, 5000.0)])

    text = render_section(summary)

    assert "| table | 100k | 1M | 1M / 100k |" in text
    assert "| model path: items read | 100.0 | 100.0 | 1.000x |" in text
    assert "| online path: items read | 500.0 | 5,000.0 | 10.000x |" in text
    assert "within 10 % at every size: yes" in text
    assert "0 failed responses" in text
    # The summary is printed on stdout as JSON.
    assert json.loads(json.dumps(summary)) == summary


def test_render_only_rewrites_section_from_json(tmp_path: Path) -> None:
    from tools.bench_scale import main

    summary = report_summary([stage(1000, 100.0, 500.0), stage(10_000, 100.0, 800.0)])
    summary_path = tmp_path / "bench-scale.json"
    summary_path.write_text(json.dumps(summary), encoding="utf-8")
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nkept text\n", encoding="utf-8")

    code = main(["--render-only", "--summary-json", str(summary_path), "--output", str(page)])

    text = page.read_text(encoding="utf-8")
    assert code == 0
    assert "kept text" in text
    assert "| model path: items read | 100.0 | 100.0 | 1.000x |" in text
    assert "u1 (2 items): 2,002 items" in text
