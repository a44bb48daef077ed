"""Pure parts of tools/bench_requests.py and the naive recommender on a tiny table in moto.

No test here measures time: the benchmark's figures come from running it, not from the suite.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tools.bench_requests import (
    SECTION_END,
    SECTION_START,
    BenchmarkError,
    NaiveRun,
    NaiveSample,
    Ratings,
    RequestSample,
    ServedLogCollector,
    ServedRecord,
    build_summary,
    check_recommendations,
    parse_served_line,
    percentile,
    pick_users,
    render_section,
    replace_section,
    summarize,
)
from tools.naive_recommender import (
    NaiveDeadlineError,
    NaiveRecommender,
    add_cooccurrences,
    top_items,
)
from tools.template_table import create_table

# Tiny log for the naive recommender. For u1 (history A, B):
# - seed A is shared by u2 (A, C, D) and u5 (A, C): C gets 2, D gets 1;
# - seed B is shared by u3 (B, C): C gets 1 more, so C = 3 and D = 1;
# - u4 (D, E) shares nothing with u1, so E gets no count.
TINY_LOG = {
    "u1": ["A", "B"],
    "u2": ["A", "C", "D"],
    "u3": ["B", "C"],
    "u4": ["D", "E"],
    "u5": ["A", "C"],
}
TINY_TABLE_ITEMS = 11  # rows of TINY_LOG
TABLE = "bench-naive"


def served_line(correlation_id: str, **overrides: Any) -> str:
    document: dict[str, Any] = {
        "level": "INFO",
        "message": "Recommendations served",
        "correlation_id": correlation_id,
        "history_items": 12,
        "seed_items": 12,
        "neighbours": 40,
        "recommended": 10,
        "query_calls": 53,
        "items_read": 2100,
        "consumed_capacity": 31.5,
        "rounds": 3,
        "elapsed_ms": 84.2,
    }
    document.update(overrides)
    return json.dumps(document) + "\n"


# --------------------------------------------------------------------------- statistics


def test_percentile_median_of_even_count() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5


def test_percentile_p95_interpolates() -> None:
    values = [float(number) for number in range(1, 21)]
    # rank (20 - 1) * 0.95 = 18.05, between 19 and 20
    assert percentile(values, 0.95) == pytest.approx(19.05)


def test_percentile_extremes_and_single_value() -> None:
    assert percentile([5.0, 9.0, 7.0], 0.0) == 5.0
    assert percentile([5.0, 9.0, 7.0], 1.0) == 9.0
    assert percentile([42.0], 0.95) == 42.0


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        percentile([1.0], 1.5)


def test_summarize_hides_p95_of_few_samples() -> None:
    few = summarize([1.0, 2.0, 3.0])
    assert few["p95"] is None
    assert few["median"] == 2.0
    assert few["mean"] == 2.0
    assert few["count"] == 3


def test_summarize_reports_p95_from_twenty() -> None:
    figures = summarize([float(number) for number in range(1, 21)])
    assert figures["p95"] == pytest.approx(19.05)
    assert figures["max"] == 20.0


def test_summarize_empty() -> None:
    figures = summarize([])
    assert figures["count"] == 0
    assert figures["median"] is None


# --------------------------------------------------------------------------- log lines


def test_parse_served_line_reads_fields() -> None:
    record = parse_served_line(served_line("req-1"))
    assert record is not None
    assert record.correlation_id == "req-1"
    assert record.query_calls == 53
    assert record.items_read == 2100
    assert record.consumed_capacity == 31.5
    assert record.rounds == 3
    assert record.elapsed_ms == 84.2


def test_parse_served_line_ignores_other_lines() -> None:
    assert parse_served_line('{"message": "Rejected invalid request"}') is None
    assert parse_served_line("2026-01-01 INFO tools.local_api: GET /x 200 3.0 ms") is None
    assert parse_served_line("{not json") is None
    assert parse_served_line("") is None


def test_parse_served_line_missing_field_raises() -> None:
    line = served_line("req-1")
    document = json.loads(line)
    del document["items_read"]
    with pytest.raises(BenchmarkError, match="items_read"):
        parse_served_line(json.dumps(document))


def test_collector_matches_by_request_id() -> None:
    collector = ServedLogCollector()
    collector.feed(served_line("req-1", items_read=1))
    collector.feed("plain text from the front end\n")
    collector.feed(served_line("req-2", items_read=2))
    assert collector.take("req-2").items_read == 2
    assert collector.take("req-1").items_read == 1
    assert collector.other_lines == 1


def test_collector_in_order_skips_taken() -> None:
    collector = ServedLogCollector()
    for number in (1, 2, 3):
        collector.feed(served_line(f"req-{number}", items_read=number))
    assert collector.take("req-1").items_read == 1
    assert collector.take(None).items_read == 2
    assert collector.take(None).items_read == 3


def test_collector_take_twice_times_out() -> None:
    collector = ServedLogCollector()
    collector.feed(served_line("req-1"))
    collector.take("req-1")
    with pytest.raises(BenchmarkError, match="req-1"):
        collector.take("req-1", timeout_s=0.05)


def test_collector_follow_reads_stream() -> None:
    collector = ServedLogCollector()
    lines = iter([served_line("req-9", items_read=9)])
    thread = collector.follow(lines)  # type: ignore[arg-type]
    thread.join(timeout=5)
    assert collector.take("req-9", timeout_s=5).items_read == 9


# --------------------------------------------------------------------------- checks and users


def body_of(*item_ids: str) -> dict[str, Any]:
    return {
        "user_id": "u",
        "recommendations": [{"item_id": item, "score": 1.0} for item in item_ids],
    }


def test_check_recommendations_accepts_valid() -> None:
    items = [f"i{number}" for number in range(10)]
    assert check_recommendations(body_of(*items), seen={"x", "y"}) == []


def test_check_recommendations_flags_seen_item() -> None:
    items = [f"i{number}" for number in range(10)]
    problems = check_recommendations(body_of(*items), seen={"i3", "i7"})
    assert len(problems) == 2
    assert "'i3'" in problems[0]
    assert "'i7'" in problems[1]


def test_check_recommendations_flags_count_and_repeat() -> None:
    problems = check_recommendations(body_of("a", "a", "b"), seen=set())
    assert "3 recommendations instead of 10" in problems
    assert "an item is recommended twice" in problems


def test_check_recommendations_flags_bad_shape() -> None:
    assert check_recommendations({"message": "error"}, seen=set()) == [
        "the body has no recommendations list"
    ]
    assert check_recommendations([], seen=set()) == ["the body has no recommendations list"]


def test_pick_users_is_seeded_and_disjoint() -> None:
    users = [str(number) for number in range(50)]
    first = pick_users(users, 10, 3, seed=7)
    again = pick_users(reversed(users), 10, 3, seed=7)
    measured, warmup = first
    assert first == again
    assert len(measured) == 10
    assert len(set(measured)) == 10
    assert len(warmup) == 3
    assert not set(measured) & set(warmup)


def test_pick_users_too_many_raises() -> None:
    with pytest.raises(BenchmarkError, match="--users 10 plus --warmup 3 need 13 users"):
        pick_users(["a", "b"], 10, 3, seed=7)


# --------------------------------------------------------------------------- page section


def test_replace_section_creates_page() -> None:
    page = replace_section("", f"{SECTION_START}\nnew\n{SECTION_END}\n")
    assert page.startswith("# Benchmarks\n")
    assert page.endswith(f"{SECTION_START}\nnew\n{SECTION_END}\n")


def test_replace_section_keeps_other_content() -> None:
    old = f"# Benchmarks\n\nintro\n\n{SECTION_START}\nold\n{SECTION_END}\n\n## Other\n\nkept\n"
    page = replace_section(old, f"{SECTION_START}\nnew\n{SECTION_END}\n")
    assert "old" not in page
    assert f"{SECTION_START}\nnew\n{SECTION_END}\n" in page
    assert page.startswith("# Benchmarks\n\nintro\n\n")
    assert page.endswith("\n## Other\n\nkept\n")


def test_replace_section_appends_to_page_without_markers() -> None:
    page = replace_section("# Benchmarks\n\n## Other\n", f"{SECTION_START}\nnew\n{SECTION_END}\n")
    assert page == f"# Benchmarks\n\n## Other\n\n{SECTION_START}\nnew\n{SECTION_END}\n"


def test_replace_section_unmatched_marker_raises() -> None:
    with pytest.raises(BenchmarkError, match="unmatched"):
        replace_section(f"{SECTION_START}\nold\n", "section")


BUDGETS = {
    "max_history_items": 500,
    "max_seed_items": 50,
    "max_users_per_item": 50,
    "max_neighbours": 100,
    "max_items_per_neighbour": 200,
    "max_items_read": 23_000,
    "max_query_calls_one_page_each": 151,
}
RECORD = ServedRecord("r", 50, 2_000, 40.0, 3, 20, 20, 30, 90.0)


def make_summary(
    api_samples: list[RequestSample], ratings: Ratings, naive_samples: list[NaiveSample]
) -> dict[str, Any]:
    args = argparse.Namespace(
        ratings="ratings.csv", users=len(api_samples), seed=7, warmup=0, naive_budget_seconds=60.0
    )
    return build_summary(
        args=args,
        command="bench",
        ratings=ratings,
        load_seconds=1.0,
        budgets=BUDGETS,
        api_samples=api_samples,
        naive_users=[sample.user_id for sample in naive_samples],
        naive_run=NaiveRun(samples=naive_samples),
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        runtime_s=12.0,
        load_average_before=0.5,
    )


def test_render_section_shows_paired_ratio() -> None:
    api_samples = [
        RequestSample("u1", 200, 100.0, "r1", 10, record=RECORD),
        RequestSample("u2", 200, 120.0, "r2", 10, record=RECORD),
    ]
    naive = NaiveSample(
        user_id="u1",
        history_items=2,
        completed=True,
        latency_ms=10_000.0,
        query_calls=1,
        scan_calls=99,
        full_scans=2,
        items_read=200_000,
        consumed_capacity=4_000.0,
        scan_seconds=[5.0, 5.0],
    )
    ratings = Ratings(user_items={"u1": {"a", "b"}, "u2": {"c"}}, rows=3, rejected=0)
    summary = make_summary(api_samples, ratings, [naive])
    section = render_section(summary)
    # items read: 200,000 naive / 2,000 ours on the same user
    assert summary["ratios_naive_over_ours_same_users"]["items_read_mean"] == 100.0
    assert "| items read, mean | 2,000 | 2,000 | 200,000 | 100x |" in section
    # latency: 10,000 ms naive / 100 ms ours for u1
    assert "| latency median (ms) | 110.0 | 100.0 | 10,000.0 | 100x |" in section
    assert section.startswith(SECTION_START)
    assert section.rstrip().endswith(SECTION_END)
    assert "23,000" in section
    assert summary["checks"]["failed_responses"] == []


def test_render_section_lists_failed_responses() -> None:
    problem = "item 'x' is already in the user's ratings"
    api_samples = [
        RequestSample("u1", 200, 100.0, "r1", 10, problems=[problem], record=RECORD),
        RequestSample("u2", 200, 120.0, "r2", 10, record=RECORD),
    ]
    ratings = Ratings(
        user_items={"u1": {f"i{number}" for number in range(600)}, "u2": {"c"}},
        rows=601,
        rejected=0,
    )
    summary = make_summary(api_samples, ratings, [])
    section = render_section(summary)
    assert summary["checks"]["failed_responses"] == [
        {"user_id": "u1", "ratings": 600, "problems": [problem]}
    ]
    assert f"User u1 (600 ratings): {problem}." in section
    assert "more than `max_history_items` (500) ratings" in section
    assert "1 response with a wrong count" in section


# --------------------------------------------------------------------------- naive recommender


def test_top_items_breaks_ties_by_id() -> None:
    assert top_items({"b": 2, "a": 2, "c": 5}, 2) == [("c", 5), ("a", 2)]


def test_add_cooccurrences_skips_target_and_seen() -> None:
    counts: dict[str, int] = defaultdict(int)
    add_cooccurrences(counts, "A", TINY_LOG, "u1", seen={"A", "B"})
    assert dict(counts) == {"C": 2, "D": 1}


@pytest.fixture
def tiny_table() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, TABLE)
        timestamp = 1_700_000_000
        for user_id, items in TINY_LOG.items():
            for item_id in items:
                timestamp += 1
                client.put_item(
                    TableName=TABLE,
                    Item={
                        "user_id": {"S": user_id},
                        "item_id": {"S": item_id},
                        "interaction_type": {"S": "rating"},
                        "timestamp": {"N": str(timestamp)},
                        "weight": {"N": "4"},
                    },
                )
        yield client


def test_naive_recommends_by_cooccurrence(tiny_table: Any) -> None:
    result = NaiveRecommender(tiny_table, TABLE).recommend("u1", limit=10)
    assert result.recommendations == [("C", 3), ("D", 1)]
    assert result.history_items == 2


def test_naive_counts_items_read(tiny_table: Any) -> None:
    stats = NaiveRecommender(tiny_table, TABLE).recommend("u1", limit=10).stats
    # |H| + |H| * |T| = 2 + 2 * 11
    assert stats.items_read == 2 + 2 * TINY_TABLE_ITEMS
    assert stats.query_calls == 1
    assert stats.scan_calls == 2
    assert stats.full_scans == 2
    assert stats.requests == 3


def test_naive_unknown_user_is_empty(tiny_table: Any) -> None:
    result = NaiveRecommender(tiny_table, TABLE).recommend("nobody", limit=10)
    assert result.recommendations == []
    assert result.stats.scan_calls == 0


def test_naive_scans_every_page(tiny_table: Any) -> None:
    recommender = NaiveRecommender(tiny_table, TABLE)
    original_scan = tiny_table.scan

    def small_pages(**request: Any) -> Any:
        return original_scan(Limit=3, **request)

    tiny_table.scan = small_pages
    result = recommender.recommend("u1", limit=10)
    assert result.recommendations == [("C", 3), ("D", 1)]
    assert result.stats.items_read == 2 + 2 * TINY_TABLE_ITEMS
    # 11 items in pages of 3: 4 pages per full Scan
    assert result.stats.scan_calls == 2 * 4


def test_naive_deadline_raises_with_counts(tiny_table: Any) -> None:
    recommender = NaiveRecommender(tiny_table, TABLE)
    with pytest.raises(NaiveDeadlineError, match="after 0 of 2 full-table Scans") as raised:
        recommender.recommend("u1", limit=10, deadline=time.monotonic() - 1)
    assert raised.value.stats.query_calls == 1
    assert raised.value.stats.scan_calls == 0
