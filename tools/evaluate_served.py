"""Quality served over HTTP with the model, against the offline figure of the same model.

    python -m tools.evaluate_served [--ratings PATH] [--seed 42] [--train-fraction 0.75]
        [--top-k 10] [--output docs/quality.md]

Steps, all on 127.0.0.1:

1. Split the ratings per user as tools.evaluate does (same seed, same fraction).
2. Write the training part to a CSV file and load it with tools.loader into an in-memory
   dynalite, into tables created from template.yaml.
3. Build the model with `python -m tools.build_model`, the command `make demo` runs, with
   the builder's defaults.
4. Start tools.local_api with the model table set and send
   GET /recommendations/{user_id}?limit=K for every test user, one at a time. The returned
   lists are scored against the held-out items.
5. Score the same split offline with the core and the builder's configuration (pruned
   item-based form, N neighbours), and report both figures and their difference.

The JSON summary is the last line of stdout; the `evaluate_served` section of --output is
rewritten.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tools.bench_requests import (
    ApiClient,
    BenchmarkError,
    LocalApiProcess,
    ServedLogCollector,
    server_environment,
)
from tools.bench_scale import build_model_timed
from tools.benchmark_page import (
    BenchmarkPageError,
    configure_logging,
    git_commit,
    write_section,
)
from tools.dynalite import Dynalite, DynaliteError
from tools.evaluation.data import DatasetError, Split, read_ratings, split_per_user
from tools.evaluation.metrics import MetricTotals
from tools.evaluation.scorers import CoreScorer
from tools.generate_interactions import CSV_HEADER
from tools.loader import LoaderError, load_file
from tools.template_table import (
    DEFAULT_MODEL_TABLE_NAME,
    TemplateError,
    create_model_table,
    create_table,
)

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
SRC_DIR = REPO_ROOT / "src"
DEFAULT_RATINGS = REPO_ROOT.parent / "shared" / "datasets" / "ml-latest-small" / "ratings.csv"
DEFAULT_OUTPUT = REPO_ROOT / "docs" / "quality.md"
SECTION_NAME = "evaluate_served"
TABLE_NAME = "UserInteractions"
DECIMALS = 4
# Largest accepted gap between the served and the offline nDCG.
TOLERANCE = 0.002


class ServedEvaluationError(RuntimeError):
    """Error of one step of the served evaluation; the message names the step."""


def write_training_csv(split: Split, path: Path) -> int:
    """Write every training interaction in the loader's CSV format; return the row count."""
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for user_id, interactions in split.train.items():
            for row in interactions:
                weight = "" if row.weight is None else repr(row.weight)
                writer.writerow((user_id, row.item_id, row.interaction_type, row.timestamp, weight))
                rows += 1
    return rows


def served_lists(
    port: int, collector: ServedLogCollector, users: Sequence[str], top_k: int
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """GET each user's list; return the lists and counts of sources, items read and failures."""
    client = ApiClient(port)
    lists: dict[str, list[str]] = {}
    sources: dict[str, int] = {}
    items_read = 0
    failures: list[str] = []
    for number, user_id in enumerate(users, start=1):
        status, request_id, body, _ = client.get(
            f"/recommendations/{quote(user_id, safe='')}?limit={top_k}"
        )
        if status != 200:
            failures.append(f"{user_id}: HTTP {status}")
            lists[user_id] = []
            continue
        document = json.loads(body)
        lists[user_id] = [entry["item_id"] for entry in document["recommendations"]]
        record = collector.take(request_id)
        sources[str(record.source)] = sources.get(str(record.source), 0) + 1
        items_read += record.items_read
        if number % 100 == 0:
            logger.info("%d of %d users requested", number, len(users))
    return lists, {
        "sources": sources,
        "items_read_per_request": items_read / len(users) if users else 0.0,
        "failures": failures,
    }


def offline_lists(split: Split, users: Sequence[str], top_k: int) -> dict[str, list[str]]:
    """Rank each user's list with the core and the builder's configuration, in memory."""
    if str(SRC_DIR) not in sys.path:
        sys.path.insert(0, str(SRC_DIR))
    from item_model import DEFAULT_NEIGHBOURS_PER_ITEM, similarity_config

    scorer = CoreScorer(split.train, similarity_config(DEFAULT_NEIGHBOURS_PER_ITEM))
    return {user_id: scorer.recommend(user_id, split.train[user_id], top_k) for user_id in users}


def metrics_of(
    lists: dict[str, list[str]], split: Split, top_k: int, catalogue: int
) -> dict[str, Any]:
    totals = MetricTotals(k=top_k)
    for user_id, ranked in lists.items():
        totals.add(ranked, split.test[user_id])
    return {
        key: round(value, DECIMALS) if isinstance(value, float) else value
        for key, value in totals.summary(catalogue).items()
    }


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    started = time.monotonic()
    log = read_ratings(args.ratings)
    split = split_per_user(log.histories, seed=args.seed, train_fraction=args.train_fraction)
    users = split.test_users()
    catalogue = len(log.catalogue())

    with tempfile.TemporaryDirectory(prefix="evaluate-served-") as folder:
        training = Path(folder) / "train.csv"
        rows = write_training_csv(split, training)
        with Dynalite(port=0) as server:
            client = server.client()
            create_table(client, TABLE_NAME)
            create_model_table(client)
            report = load_file(training, TABLE_NAME, client=client, progress=False)
            if report.rows_written != rows:
                raise ServedEvaluationError(
                    f"the loader wrote {report.rows_written} of {rows} training rows"
                )
            build = build_model_timed(server.endpoint_url, sys.executable)
            env = {
                **server_environment(server.endpoint_url),
                "MODEL_TABLE_NAME": DEFAULT_MODEL_TABLE_NAME,
            }
            collector = ServedLogCollector()
            api = LocalApiProcess(env, collector)
            try:
                api.start()
                served, counts = served_lists(api.port, collector, users, args.top_k)
            finally:
                api.stop()

    offline = offline_lists(split, users, args.top_k)
    served_metrics = metrics_of(served, split, args.top_k, catalogue)
    offline_metrics = metrics_of(offline, split, args.top_k, catalogue)
    key = f"ndcg@{args.top_k}"
    difference = round(served_metrics[key] - offline_metrics[key], DECIMALS)
    same_lists = sum(1 for user_id in users if served[user_id] == offline[user_id])
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "runtime_s": round(time.monotonic() - started, 1),
        "command": command,
        "code": git_commit() or "unknown",
        "dataset": {"path": str(args.ratings), "interactions": log.interactions},
        "split": {"seed": args.seed, "train_fraction": args.train_fraction, "top_k": args.top_k},
        "training_rows": rows,
        "users": len(users),
        "model_build_seconds": build["seconds"],
        "model_build": build["summary"],
        "served": served_metrics,
        "served_counts": counts,
        "offline": offline_metrics,
        "ndcg_difference": difference,
        "within_tolerance": abs(difference) <= TOLERANCE and not counts["failures"],
        "identical_lists": same_lists,
    }


def render_section(summary: dict[str, Any]) -> str:
    k = summary["split"]["top_k"]
    served, offline = summary["served"], summary["offline"]
    counts = summary["served_counts"]
    lines = [
        "## Served over HTTP with the model",
        "",
        "Written by `tools/evaluate_served.py`; rerun the command below to refresh this section.",
        "",
        f"- Date: {summary['date']}; runtime {summary['runtime_s']:,.0f} s.",
        f"- Command: `{summary['command']}`, on commit {summary['code']}.",
        (
            f"- The {summary['training_rows']:,} training interactions of the protocol's split"
            f" (seed {summary['split']['seed']}) were loaded into dynalite with tools.loader, the"
            f" model was built with tools.build_model ({summary['model_build_seconds']:,.0f} s),"
            f" and tools.local_api answered GET /recommendations/{{user_id}}?limit={k} for all"
            f" {summary['users']} test users."
        ),
        (
            "- Offline: the same split scored in memory by the core with the builder's"
            " configuration (`item_model.similarity_config`, alpha = beta = q = 0.5, p = 1,"
            " N = 100)."
        ),
        "",
        f"| | nDCG@{k} | P@{k} | R@{k} | MAP@{k} | coverage |",
        "|---|---|---|---|---|---|",
    ]
    for label, figures in (("served over HTTP", served), ("offline", offline)):
        lines.append(
            f"| {label} | {figures[f'ndcg@{k}']:.4f} | {figures[f'precision@{k}']:.4f} |"
            f" {figures[f'recall@{k}']:.4f} | {figures[f'map@{k}']:.4f} |"
            f" {figures['coverage']:.4f} |"
        )
    verdict = "within" if summary["within_tolerance"] else "not within"
    lines += [
        "",
        (
            f"- Difference: {summary['ndcg_difference']:+.4f} nDCG@{k}, {verdict} the"
            f" {TOLERANCE} tolerance. {summary['identical_lists']} of {summary['users']} lists"
            " are identical item for item."
        ),
        (
            f"- Sources served: {counts['sources']}; {counts['items_read_per_request']:,.1f}"
            f" items read per request; {len(counts['failures'])} failed requests."
        ),
    ]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.evaluate_served",
        description="Measure the quality that the local API serves with the model.",
    )
    parser.add_argument("--ratings", type=Path, default=DEFAULT_RATINGS, help="ratings file")
    parser.add_argument("--seed", type=int, default=42, help="split seed (default: 42)")
    parser.add_argument(
        "--train-fraction", type=float, default=0.75, help="training share (default: 0.75)"
    )
    parser.add_argument("--top-k", type=int, default=10, help="list length (default: 10)")
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="page to update (docs/quality.md)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    configure_logging()
    command = shlex.join([".venv/bin/python", "-m", "tools.evaluate_served", *arguments])
    try:
        summary = run(args, command)
    except (
        ServedEvaluationError,
        BenchmarkError,
        BenchmarkPageError,
        DatasetError,
        DynaliteError,
        LoaderError,
        TemplateError,
    ) as error:
        logger.error("Served evaluation failed: %s", error)
        return 1
    write_section(args.output, SECTION_NAME, render_section(summary))
    print(json.dumps(summary, sort_keys=True))
    return 0 if summary["within_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
