"""tools/bench_builder.py: the child protocol, the extrapolation and the generated table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tools.bench_builder import (
    BEGIN_MARKER,
    END_MARKER,
    extrapolate,
    render_table,
    run_child,
    update_doc,
)
from tools.generate_interactions import GeneratorSettings, write_csv


def finished(interactions: int, cpu_seconds: float, peak_rss_mb: float) -> dict[str, Any]:
    return {
        "status": "finished",
        "interactions": interactions,
        "cpu_seconds": cpu_seconds,
        "peak_rss_mb": peak_rss_mb,
    }


def test_extrapolation_of_linear_growth() -> None:
    # Time and memory both 10 times larger for 10 times the log: exponent 1, so the
    # 900 s timeout falls at 900 / 100 * 1e6 and 10,240 MB at 10,240 / 1,000 * 1e6.
    fit = extrapolate([finished(100_000, 10.0, 100.0), finished(1_000_000, 100.0, 1000.0)])

    assert fit is not None
    assert fit["time_exponent"] == pytest.approx(1.0)
    assert fit["memory_exponent"] == pytest.approx(1.0)
    assert fit["interactions_at_timeout"] == pytest.approx(9_000_000, rel=1e-6)
    assert fit["interactions_at_memory_limit"] == pytest.approx(10_240_000, rel=1e-6)


def test_extrapolation_skips_unfinished_runs() -> None:
    timed_out = {"status": "timed out", "interactions": 10_000_000}

    assert extrapolate([finished(100_000, 10.0, 100.0), timed_out]) is None


def test_table_shows_where_a_run_stopped() -> None:
    report = {
        "measured_at": "2025-01-01",
        "machine": "test machine",
        "python": "3.11",
        "neighbours": 100,
        "time_cap_minutes": 20,
        "compute": [
            {
                "status": "timed out",
                "interactions": 10_000_000,
                "phases": [
                    {"phase": "group", "seconds": 20.0, "users": 400_000},
                    {"phase": "index", "seconds": 7.0, "items": 470_000, "pairs": 10**9},
                    {"phase": "rows", "done": 235_000, "of": 470_000, "seconds": 600.0},
                ],
            }
        ],
    }

    table = render_table(report)

    assert table.startswith(BEGIN_MARKER)
    assert table.endswith(END_MARKER)
    assert "| 10,000,000 | 400,000 | 470,000 | 1,000,000,000 |" in table
    assert "235,000 of 470,000 items after 600 s" in table
    assert "about 1,200 s" in table


def test_update_doc_replaces_block(tmp_path: Path) -> None:
    doc = tmp_path / "model.md"
    doc.write_text(f"intro\n{BEGIN_MARKER}\nold\n{END_MARKER}\noutro\n", encoding="utf-8")

    update_doc(doc, f"{BEGIN_MARKER}\nnew\n{END_MARKER}")

    assert doc.read_text(encoding="utf-8") == f"intro\n{BEGIN_MARKER}\nnew\n{END_MARKER}\noutro\n"


def test_update_doc_needs_markers(tmp_path: Path) -> None:
    doc = tmp_path / "model.md"
    doc.write_text("no markers\n", encoding="utf-8")

    with pytest.raises(SystemExit, match="bench:begin"):
        update_doc(doc, "x")


def test_compute_child_reports_phases(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    write_csv(GeneratorSettings(interactions=2000, items=100, seed=1), path)

    result = run_child(["--child-compute", str(path), "--neighbours", "5"], 120)

    assert result["status"] == "finished"
    assert [phase["phase"] for phase in result["phases"]][:2] == ["group", "index"]
    assert result["phase"] == "done"
    assert result["items"] == result["phases"][1]["items"]
    assert result["neighbour_bytes"] > 0
    assert result["peak_rss_mb"] > 0


def test_failed_child_reported(tmp_path: Path) -> None:
    result = run_child(["--child-compute", str(tmp_path / "absent.csv")], 60)

    assert result["status"].startswith("failed")
    assert "absent.csv" in result["stderr_tail"]
