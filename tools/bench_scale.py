"""Cost of one recommendation request as the table grows: model path, online path, naive scan.

    python -m tools.bench_scale [--sizes 100000 1000000 10000000] [--items 20000] [--seed 42]
        [--probe-users 50] [--naive-users 2] [--naive-budget-seconds 900]
        [--work-dir .local/scale] [--prepare-only] [--output docs/benchmarks.md]

Steps, all on 127.0.0.1:

1. Generate one seeded synthetic log of the largest size with tools.generate_interactions.
   The catalogue is fixed (--items) and rows come grouped by user. So the first rows of the
   log form each smaller table. The first users have the same histories in every table, and
   only the number of other users grows.
2. Load the log in stages into one dynalite kept on disk: the rows up to the first size,
   then up to the next. Each finished stage is kept as its own data folder,
   `<work-dir>/db-<size>`, so a rerun skips the loading (about an hour for 10M rows here).
   A stage cut short resumes from the loader's checkpoint. `--prepare-only` stops here.
3. For each size: start dynalite on that folder, build the model with tools.build_model,
   then send GET /recommendations/{user_id} through tools.local_api for each probe user (the
   first --probe-users users of the log), once with the model and once with the model table
   unset (the online path). Each request is matched to the handler's log line, which gives
   its rounds, DynamoDB calls, items read and consumed capacity.
4. Run the naive full-scan recommender on the probe users with the shortest histories,
   within --naive-budget-seconds per size.
5. Print a JSON summary as the last line of stdout and rewrite the `bench_scale` section of
   --output.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tools.bench_requests import (
    BenchmarkError,
    LocalApiProcess,
    NaiveRun,
    Ratings,
    RequestSample,
    ServedLogCollector,
    ratio,
    run_api_requests,
    run_naive,
    server_environment,
    summarize,
)
from tools.benchmark_page import (
    BENCHMARKS_PAGE,
    BenchmarkPageError,
    configure_logging,
    git_commit,
    write_section,
)
from tools.dynalite import LOCAL_CREDENTIALS, Dynalite, DynaliteError, port_in_use
from tools.generate_interactions import GeneratorSettings, write_csv
from tools.load_test import machine_description
from tools.template_table import (
    DEFAULT_MODEL_TABLE_NAME,
    TemplateError,
    create_model_table,
    create_table,
)

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORK_DIR = REPO_ROOT / ".local" / "scale"
DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000)
DEFAULT_SUMMARY_JSON = REPO_ROOT / "docs" / "bench-scale.json"
TABLE_NAME = "UserInteractions"
SECTION_NAME = "bench_scale"
STATE_FILE = "state.json"
LOG_FILE = "log.csv"


class ScaleBenchError(RuntimeError):
    """Error of one step of the scale benchmark; the message names the step and the fix."""


@dataclass(frozen=True)
class LogSettings:
    """Settings of the generated log and its staged tables; other settings need a new work dir."""

    largest_size: int
    items: int
    seed: int

    def generator(self) -> GeneratorSettings:
        return GeneratorSettings(interactions=self.largest_size, items=self.items, seed=self.seed)


# --------------------------------------------------------------------------- preparation


class WorkDir:
    """Work folder: the generated log, the staged data folders and a state file of finished steps."""

    def __init__(self, root: Path, settings: LogSettings) -> None:
        self.root = root
        self.settings = settings
        self.state_path = root / STATE_FILE
        self.log_path = root / LOG_FILE

    def stage_dir(self, size: int) -> Path:
        return self.root / f"db-{size}"

    def read_state(self) -> dict[str, Any]:
        if not self.state_path.exists():
            return {"settings": asdict(self.settings), "log_complete": False, "stages": []}
        state = json.loads(self.state_path.read_text(encoding="utf-8"))
        recorded = state.get("settings", {})
        # A longer log with the same items and seed starts with the same rows, so it serves.
        if (
            recorded.get("items") != self.settings.items
            or recorded.get("seed") != self.settings.seed
            or recorded.get("largest_size", 0) < self.settings.largest_size
        ):
            raise ScaleBenchError(
                f"{self.root} contains tables made with {recorded}, which do not match"
                f" {asdict(self.settings)}; pass another --work-dir or delete that folder"
            )
        return state

    def write_state(self, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = self.state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        temporary.replace(self.state_path)


def ensure_log(work: WorkDir) -> None:
    """Generate the log once; the generator writes the same bytes for the same settings."""
    state = work.read_state()
    if state["log_complete"] and work.log_path.exists():
        return
    logger.info("Generating %d interactions into %s", work.settings.largest_size, work.log_path)
    report = write_csv(work.settings.generator(), work.log_path)
    state["log_complete"] = True
    state["log"] = {"rows": report.rows, "users": report.users, "items_used": report.items_used}
    work.write_state(state)


def write_chunk(log_path: Path, first_row: int, end_row: int, output: Path) -> int:
    """Copy data rows first_row..end_row - 1 (0-based) of the log to `output`, with the header."""
    written = 0
    with (
        log_path.open(encoding="utf-8", newline="") as source,
        output.open("w", encoding="utf-8", newline="") as target,
    ):
        header = source.readline()
        target.write(header)
        for number, line in enumerate(source):
            if number >= end_row:
                break
            if number >= first_row:
                target.write(line)
                written += 1
    return written


def local_environment() -> dict[str, str]:
    """Return this process's environment with the dummy credentials and Region of a local server."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": LOCAL_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": LOCAL_CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": LOCAL_CREDENTIALS["region_name"],
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    return env


def _resume_port(checkpoint: Path) -> int:
    """Return the port of the interrupted load, because its checkpoint names the endpoint."""
    try:
        endpoint = json.loads(checkpoint.read_text(encoding="utf-8"))["endpoint_url"]
        port = int(endpoint.rsplit(":", 1)[1])
    except (OSError, ValueError, KeyError, IndexError):
        return 0
    return 0 if port_in_use(port) else port


def load_stage(work: WorkDir, size: int, previous: int | None, python: str) -> None:
    """Create `<work-dir>/db-<size>`: a copy of the previous stage plus the rows up to `size`."""
    final_dir = work.stage_dir(size)
    partial_dir = final_dir.with_name(final_dir.name + ".partial")
    checkpoint = work.root / f"load-{size}.checkpoint.json"
    chunk = work.root / f"chunk-{size}.csv"
    if not partial_dir.exists():
        if previous is not None:
            logger.info("Copying stage %d to start stage %d", previous, size)
            shutil.copytree(work.stage_dir(previous), partial_dir)
        else:
            partial_dir.mkdir(parents=True)
        checkpoint.unlink(missing_ok=True)
    if not chunk.exists():
        rows = write_chunk(work.log_path, previous or 0, size, chunk)
        logger.info("Stage %d: %d rows to load", size, rows)

    started = time.monotonic()
    with Dynalite(
        port=_resume_port(checkpoint), data_dir=partial_dir, startup_timeout_s=300
    ) as server:
        client = server.client()
        create_table(client, TABLE_NAME)
        create_model_table(client)
        command = [
            python, "-m", "tools.loader", str(chunk), "--table", TABLE_NAME,
            "--endpoint-url", server.endpoint_url, "--checkpoint", str(checkpoint),
            "--checkpoint-interval", "5", "--resume", "--no-progress",
        ]  # fmt: skip
        completed = subprocess.run(command, cwd=REPO_ROOT, env=local_environment(), check=False)
        if completed.returncode != 0:
            raise ScaleBenchError(
                f"the loader exited with {completed.returncode} on stage {size}; rerun to resume"
            )
    partial_dir.replace(final_dir)
    chunk.unlink(missing_ok=True)
    state = work.read_state()
    state["stages"].append({"size": size, "load_seconds": round(time.monotonic() - started, 1)})
    work.write_state(state)
    logger.info("Stage %d loaded in %.0f s", size, time.monotonic() - started)


def prepare(work: WorkDir, sizes: Sequence[int], python: str) -> None:
    """Generate the log and load every stage that is not complete yet."""
    ensure_log(work)
    done = {stage["size"] for stage in work.read_state()["stages"]}
    previous: int | None = None
    for size in sizes:
        if size not in done or not work.stage_dir(size).exists():
            load_stage(work, size, previous, python)
        previous = size


def probe_histories(log_path: Path, users: int, largest_row: int) -> dict[str, list[str]]:
    """Return the items of the first `users` users of the log, checking they end by `largest_row`."""
    histories: dict[str, list[str]] = {}
    with log_path.open(encoding="utf-8", newline="") as stream:
        for number, row in enumerate(csv.DictReader(stream)):
            user_id = row["user_id"]
            if user_id not in histories and len(histories) == users:
                return histories
            if number >= largest_row:
                raise ScaleBenchError(
                    f"the first {users} users of the log do not fit in {largest_row} rows;"
                    " lower --probe-users or raise the smallest size"
                )
            histories.setdefault(user_id, []).append(row["item_id"])
    return histories


def users_in_prefix(log_path: Path, rows: int) -> int:
    """Count the distinct users of the first `rows` data rows (rows come grouped by user)."""
    users = 0
    previous = None
    with log_path.open(encoding="utf-8", newline="") as stream:
        stream.readline()
        for number, line in enumerate(stream):
            if number >= rows:
                break
            user_id = line.split(",", 1)[0]
            if user_id != previous:
                users += 1
                previous = user_id
    return users


# --------------------------------------------------------------------------- measurement


def build_model_timed(endpoint_url: str, python: str) -> dict[str, Any]:
    """Run tools.build_model once; return its summary, wall seconds and peak resident memory."""
    command = [python, "-m", "tools.build_model", "--endpoint-url", endpoint_url,
               "--read-capacity", "1000000"]  # fmt: skip
    started = time.monotonic()
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=local_environment(), stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    output = process.stdout.read()
    # wait4 gives this child's own resource usage, where getrusage would mix in every child.
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    if process.returncode != 0:
        raise ScaleBenchError(f"tools.build_model exited with {process.returncode}")
    lines = [line for line in output.splitlines() if line.startswith("{")]
    summary = json.loads(lines[-1]) if lines else {}
    return {
        "seconds": round(seconds, 1),
        # ru_maxrss is in kilobytes on Linux.
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "summary": summary,
    }


def measure_api(
    env: dict[str, str], ratings: Ratings, users: Sequence[str], warmup: Sequence[str]
) -> list[RequestSample]:
    """Start tools.local_api with `env` and send one request per user, after the warm-up users."""
    collector = ServedLogCollector()
    api = LocalApiProcess(env, collector)
    try:
        api.start()
        return run_api_requests(api.port, collector, users, warmup, ratings)
    finally:
        api.stop()


def path_figures(samples: Sequence[RequestSample]) -> dict[str, Any]:
    """Per-request figures of one request path, from the handler's log lines."""
    records = [sample.record for sample in samples if sample.record is not None]
    sources: dict[str, int] = {}
    for record in records:
        sources[str(record.source)] = sources.get(str(record.source), 0) + 1
    return {
        "requests": len(samples),
        "failed": [
            {"user_id": sample.user_id, "problems": sample.problems}
            for sample in samples
            if sample.status != 200 or sample.problems or sample.record is None
        ],
        "sources": sources,
        "rounds_max": max((record.rounds for record in records), default=None),
        "dynamodb_calls": summarize([record.query_calls for record in records]),
        "items_read": summarize([record.items_read for record in records]),
        "consumed_capacity": summarize([record.consumed_capacity for record in records]),
        "latency_ms": summarize([sample.latency_ms for sample in samples]),
        "per_user_items": {
            sample.user_id: sample.record.items_read for sample in samples if sample.record
        },
    }


def naive_figures(run: NaiveRun) -> dict[str, Any]:
    complete = [sample for sample in run.samples if sample.completed]
    return {
        "measured": [
            {
                "user_id": sample.user_id,
                "history_items": sample.history_items,
                "full_scans": sample.full_scans,
                "items_read": sample.items_read,
                "consumed_capacity": round(sample.consumed_capacity, 1),
                "seconds": round(sample.latency_ms / 1000, 1),
                "problems": sample.problems,
            }
            for sample in complete
        ],
        "cut_short": [sample.user_id for sample in run.samples if not sample.completed],
        "skipped": [user_id for user_id, _, _ in run.skipped],
    }


def measure_stage(
    work: WorkDir,
    size: int,
    histories: dict[str, set[str]],
    probes: Sequence[str],
    warmup: Sequence[str],
    naive_users: int,
    naive_budget_s: float,
) -> dict[str, Any]:
    """Build the model on the stage's table, then measure the model, online and naive paths."""
    ratings = Ratings(user_items=histories, rows=0, rejected=0)
    logger.info("Stage %d: building the model", size)
    # A large LevelDB folder can take a while to open on a busy machine.
    with Dynalite(port=0, data_dir=work.stage_dir(size), startup_timeout_s=300) as server:
        build = build_model_timed(server.endpoint_url, sys.executable)
        logger.info("Stage %d: model built in %.0f s", size, build["seconds"])

        env = {
            **server_environment(server.endpoint_url),
            "MODEL_TABLE_NAME": DEFAULT_MODEL_TABLE_NAME,
        }
        model = path_figures(measure_api(env, ratings, probes, warmup))
        logger.info("Stage %d: model path measured", size)
        online_env = {**env, "MODEL_TABLE_NAME": ""}
        online = path_figures(measure_api(online_env, ratings, probes, warmup))
        logger.info("Stage %d: online path measured", size)

        # Shortest histories first: the naive approach scans the table once per history item.
        ordered = sorted(probes, key=lambda user_id: (len(histories[user_id]), user_id))
        naive = naive_figures(
            run_naive(server.client(), ordered[:naive_users], ratings, naive_budget_s)
        )
    return {
        "size": size,
        "users": users_in_prefix(work.log_path, size),
        "build": build,
        "model": model,
        "online": online,
        "naive": naive,
    }


def _mean(figures: dict[str, Any], metric: str) -> float | None:
    value = figures[metric]["mean"]
    return float(value) if value is not None else None


def growth(stages: Sequence[dict[str, Any]], path: str, metric: str) -> list[float | None]:
    """Mean of `metric` on `path` at each stage, relative to the first stage."""
    base = _mean(stages[0][path], metric)
    return [ratio(_mean(stage[path], metric), base) for stage in stages]


def naive_items_per_scan(stage: dict[str, Any]) -> float | None:
    """Items one full Scan read: the naive items read, less the history Query, per Scan."""
    measured = stage["naive"]["measured"]
    scans = sum(entry["full_scans"] for entry in measured)
    scanned = sum(entry["items_read"] - entry["history_items"] for entry in measured)
    return scanned / scans if scans else None


# --------------------------------------------------------------------------- report

FLAT_TOLERANCE = 0.10


def _fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}x"


def _size_label(size: int) -> str:
    if size % 1_000_000 == 0:
        return f"{size // 1_000_000}M"
    if size % 1_000 == 0:
        return f"{size // 1_000}k"
    return f"{size:,}"


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" if number == 1 else f"{number:,} {noun}s"


def flatness(stages: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Growth of the model path's items read and capacity, and whether it stays in 10 %."""
    items = growth(stages, "model", "items_read")
    capacity = growth(stages, "model", "consumed_capacity")
    values = [value for value in items + capacity if value is not None]
    return {
        "model_items_read": items,
        "model_consumed_capacity": capacity,
        "online_items_read": growth(stages, "online", "items_read"),
        "online_consumed_capacity": growth(stages, "online", "consumed_capacity"),
        "model_within_10_percent": bool(values)
        and all(abs(value - 1.0) <= FLAT_TOLERANCE for value in values),
    }


def render_section(summary: dict[str, Any]) -> str:
    stages = summary["stages"]
    labels = [_size_label(stage["size"]) for stage in stages]
    flat = summary["flatness"]
    probes = summary["probe_users"]
    lines = [
        "## Request cost as the table grows",
        "",
        "Written by `tools/bench_scale.py`; rerun the command below to refresh this section.",
        "",
        (
            f"- Date: {summary['date']}; runtime {summary['runtime_s']:,.0f} s, loading excluded"
            " (the staged tables are kept under the work folder)."
        ),
        f"- Command: `{summary['command']}`, on commit {summary['code']}.",
        (
            f"- Machine: {summary['machine']['cpu_cores']} cores, {summary['machine']['cpu_model']},"
            f" Python {summary['machine']['python']}; dynalite on disk, on 127.0.0.1."
        ),
        (
            f"- Data: one log from `tools.generate_interactions` (seed {summary['seed']},"
            f" {summary['items']:,} items, Zipf popularity), loaded in stages. The first rows of the"
            " log form each smaller table, so the same"
            f" {probes['count']} probe users (the first of the log; {probes['history_min']} to"
            f" {probes['history_max']} items, median {probes['history_median']:g}) have the same"
            " histories in every table, and only the other users grow."
        ),
        (
            "- Each probe user gets one GET /recommendations/{user_id}?limit=10 through"
            " `tools.local_api`, with the model built (model path) and with MODEL_TABLE_NAME unset"
            " (online path). Counts come from the handler's log line of each request. The naive"
            " full-scan recommender runs on the probe users with the shortest histories, within"
            f" {summary['naive_budget_s']:,.0f} s per table."
        ),
        "",
        "| table | " + " | ".join(labels) + f" | {labels[-1]} / {labels[0]} |",
        "|---|" + "---|" * (len(stages) + 1),
    ]

    def row(label: str, values: list[float | None], digits: int = 0) -> None:
        change = ratio(values[-1], values[0]) if values else None
        lines.append(
            f"| {label} | "
            + " | ".join(_fmt(value, digits) for value in values)
            + f" | {_times(change)} |"
        )

    row("interactions", [stage["size"] for stage in stages])
    row("users", [stage["users"] for stage in stages])
    row("model build, s", [stage["build"]["seconds"] for stage in stages])
    row("model build, peak MB", [stage["build"]["peak_rss_mb"] for stage in stages])
    for path, title in (("model", "model path"), ("online", "online path")):
        row(f"{title}: items read", [_mean(stage[path], "items_read") for stage in stages], 1)
        row(
            f"{title}: capacity (RCU)",
            [_mean(stage[path], "consumed_capacity") for stage in stages],
            1,
        )
        row(
            f"{title}: DynamoDB calls",
            [_mean(stage[path], "dynamodb_calls") for stage in stages],
            1,
        )
        row(f"{title}: most rounds", [stage[path]["rounds_max"] for stage in stages])
        row(
            f"{title}: median latency, ms",
            [stage[path]["latency_ms"]["median"] for stage in stages],
        )
    naive_items = []
    naive_capacity = []
    naive_seconds = []
    for stage in stages:
        measured = stage["naive"]["measured"]
        count = len(measured)
        naive_items.append(
            sum(entry["items_read"] for entry in measured) / count if count else None
        )
        naive_capacity.append(
            sum(entry["consumed_capacity"] for entry in measured) / count if count else None
        )
        naive_seconds.append(
            statistics.median(entry["seconds"] for entry in measured) if count else None
        )
    row("naive: items read", naive_items)
    row("naive: capacity (RCU)", naive_capacity, 1)
    row("naive: median latency, s", naive_seconds, 1)
    row("naive: items per full scan", [naive_items_per_scan(stage) for stage in stages])

    lines += [
        "",
        (
            "Means per request over the probe users. The naive rows cover the users named below,"
            " not all probe users."
        ),
        "",
        (
            f"- Model path, {labels[-1]} against {labels[0]}: items read"
            f" {_times(flat['model_items_read'][-1])}, capacity"
            f" {_times(flat['model_consumed_capacity'][-1])}; within 10 % at every size:"
            f" {'yes' if flat['model_within_10_percent'] else 'no'}."
        ),
        (
            f"- Online path, {labels[-1]} against {labels[0]}: items read"
            f" {_times(flat['online_items_read'][-1])}, capacity"
            f" {_times(flat['online_consumed_capacity'][-1])}. Its budgets cap what it reads,"
            f" but at {labels[-1]} it reads"
            f" {_fmt(ratio(_mean(stages[-1]['online'], 'items_read'), _mean(stages[-1]['model'], 'items_read')))}x"
            " the items of the model path for the same users, and it serves lower quality"
            " (quality.md)."
        ),
    ]
    for stage, label in zip(stages, labels, strict=True):
        naive = stage["naive"]
        model_items = stage["model"]["per_user_items"]
        parts = []
        for entry in naive["measured"]:
            ours = model_items.get(entry["user_id"])
            times = ratio(entry["items_read"], ours)
            parts.append(
                f"{entry['user_id']} ({_count(entry['history_items'], 'item')}):"
                f" {entry['items_read']:,}"
                f" items in {entry['seconds']:,.1f} s, {_fmt(times)}x the model path's {ours}"
            )
        skipped = len(naive["skipped"]) + len(naive["cut_short"])
        text = "; ".join(parts) if parts else "no user fitted the time budget"
        lines.append(
            f"- Naive at {label}: {text}" + (f"; {skipped} more did not fit." if skipped else ".")
        )
    failed = sum(len(stage[path]["failed"]) for stage in stages for path in ("model", "online"))
    sources = {
        label: {path: stage[path]["sources"] for path in ("model", "online")}
        for stage, label in zip(stages, labels, strict=True)
    }
    lines += [
        f"- Checks: {failed} failed responses (status, shape, seen items). Sources served: "
        + "; ".join(
            f"{label}: model path {value['model']}, online path {value['online']}"
            for label, value in sources.items()
        )
        + ".",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench_scale",
        description="Measure request cost at growing table sizes on a local dynalite.",
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
        help="table sizes in interactions, ascending (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--items", type=int, default=20_000,
        help="catalogue size, the same for every table (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=42, help="generator seed (default: 42)")
    parser.add_argument(
        "--work-dir", type=Path, default=DEFAULT_WORK_DIR,
        help="where the log and the loaded tables are kept (default: .local/scale)",
    )  # fmt: skip
    parser.add_argument(
        "--probe-users", type=int, default=50,
        help="first users of the log measured at every size (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", type=int, default=3, help="uncounted requests per path (default: 3)"
    )
    parser.add_argument(
        "--naive-users", type=int, default=2,
        help="probe users, shortest histories first, for the naive approach (default: 2)",
    )  # fmt: skip
    parser.add_argument(
        "--naive-budget-seconds", type=float, default=900.0,
        help="time for the naive approach per size (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--output", type=Path, default=BENCHMARKS_PAGE,
        help="page whose bench_scale section is rewritten (default: docs/benchmarks.md)",
    )  # fmt: skip
    parser.add_argument("--prepare-only", action="store_true", help="generate and load, then stop")
    parser.add_argument(
        "--summary-json", type=Path, default=DEFAULT_SUMMARY_JSON,
        help="file for the raw results (default: docs/bench-scale.json)",
    )  # fmt: skip
    parser.add_argument(
        "--render-only", action="store_true",
        help="rewrite the page section from --summary-json without measuring",
    )  # fmt: skip
    return parser


def run(
    args: argparse.Namespace, work: WorkDir, sizes: Sequence[int], command: str
) -> dict[str, Any]:
    started = time.monotonic()
    histories_lists = probe_histories(work.log_path, args.probe_users + args.warmup, sizes[0])
    if len(histories_lists) < args.probe_users + args.warmup:
        raise ScaleBenchError("the smallest table has fewer users than --probe-users + --warmup")
    ordered = list(histories_lists)
    probes, warmup = ordered[: args.probe_users], ordered[args.probe_users :]
    histories = {user: set(items) for user, items in histories_lists.items()}
    lengths = sorted(len(histories[user]) for user in probes)
    stages = [
        measure_stage(
            work, size, histories, probes, warmup, args.naive_users, args.naive_budget_seconds
        )
        for size in sizes
    ]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "runtime_s": round(time.monotonic() - started, 1),
        "command": command,
        "code": git_commit() or "unknown",
        "machine": machine_description(),
        "seed": args.seed,
        "items": args.items,
        "naive_budget_s": args.naive_budget_seconds,
        "probe_users": {
            "count": len(probes),
            "history_min": lengths[0],
            "history_median": statistics.median(lengths),
            "history_max": lengths[-1],
        },
        "stages": stages,
        "flatness": flatness(stages),
    }


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    configure_logging()

    sizes = sorted(set(args.sizes))
    if sizes[0] < 1:
        logger.error("Invalid --sizes: every size must be positive, got %d", sizes[0])
        return 2

    if args.render_only:
        summary = json.loads(args.summary_json.read_text(encoding="utf-8"))
        write_section(args.output, SECTION_NAME, render_section(summary))
        return 0

    work = WorkDir(args.work_dir, LogSettings(sizes[-1], args.items, args.seed))
    try:
        prepare(work, sizes, sys.executable)
        if args.prepare_only:
            return 0
        command = shlex.join([".venv/bin/python", "-m", "tools.bench_scale", *arguments])
        summary = run(args, work, sizes, command)
    except (
        ScaleBenchError,
        BenchmarkError,
        BenchmarkPageError,
        DynaliteError,
        TemplateError,
    ) as error:
        logger.error("Scale benchmark failed: %s", error)
        return 1

    args.summary_json.write_text(
        json.dumps(summary, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    write_section(args.output, SECTION_NAME, render_section(summary))
    print(json.dumps(summary, sort_keys=True))
    failed = sum(
        len(stage[path]["failed"]) for stage in summary["stages"] for path in ("model", "online")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
