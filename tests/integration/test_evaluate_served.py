"""tools.evaluate_served end to end on the 120-user MovieLens sample: dynalite, builder, local API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools import evaluate_served

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "ml-latest-small-sample" / "ratings.csv"


# The fixture skips this test without Node.js, like the other dynalite tests.
@pytest.mark.usefixtures("dynalite_endpoint")
def test_served_quality_matches_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "quality.md"

    code = evaluate_served.main(["--ratings", str(SAMPLE), "--output", str(output)])

    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert summary["users"] == 120
    assert summary["served_counts"]["failures"] == []
    assert summary["served_counts"]["sources"] == {"model": 120}
    assert abs(summary["ndcg_difference"]) <= evaluate_served.TOLERANCE
    # Equal lists, not only equal averages: the served path is the offline model.
    assert summary["identical_lists"] >= 114
    assert summary["served"]["ndcg@10"] > 0.1
    page = output.read_text(encoding="utf-8")
    assert "<!-- evaluate_served:start -->" in page
    assert "| served over HTTP |" in page
