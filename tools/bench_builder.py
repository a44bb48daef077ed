"""Measure the model builder: its compute step at several log sizes, and one build through dynalite.

Usage: python -m tools.bench_builder [--sizes 100000,1000000,10000000] [--neighbours 100]
       [--time-cap-minutes 20] [--e2e-size 100000 | --no-e2e] [--data-dir .local/bench]
       [--doc docs/model.md] [--results docs/model-bench.json]

For each size a synthetic log is generated once (tools/generate_interactions.py,
seed 42, cached in --data-dir). A child process then runs the builder's compute
step on it, without DynamoDB: read the CSV and group it by user (what the
builder does with the Scan's rows), index it, and compute and encode every
item's neighbour list. The child reports each phase as a JSON line, so a run
stopped at the time cap still shows how far it got. Peak memory is the child's
peak resident set size (getrusage ru_maxrss), the figure Lambda's memory limit
applies to.

The end-to-end run starts an in-memory dynalite, loads the --e2e-size log
(timed, but not part of a build) and runs model_builder.build_model: Scan,
compute, writes and the CURRENT flip.

The results go to --results (JSON) and into the table between the
``<!-- bench:begin -->`` and ``<!-- bench:end -->`` lines of --doc.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
SRC_DIR = REPO_ROOT / "src"
if str(SRC_DIR) not in sys.path:
    sys.path.insert(0, str(SRC_DIR))
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "recommendations")

from item_model import (
    DEFAULT_NEIGHBOURS_PER_ITEM,
    InteractionRecord,
    ItemModel,
    encode_neighbours,
    group_by_user,
    similarity_config,
)
from tools.generate_interactions import GeneratorSettings, write_csv

logger = logging.getLogger(__name__)

DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000)
DEFAULT_DATA_DIR = REPO_ROOT / ".local" / "bench"
DEFAULT_DOC = REPO_ROOT / "docs" / "model.md"
DEFAULT_RESULTS = REPO_ROOT / "docs" / "model-bench.json"
BEGIN_MARKER = "<!-- bench:begin -->"
END_MARKER = "<!-- bench:end -->"
SEED = 42
# AWS Lambda quotas: 900 s timeout and 10,240 MB memory per function.
LAMBDA_TIMEOUT_SECONDS = 900
LAMBDA_MEMORY_MB = 10_240
# Progress lines per rows phase.
PROGRESS_STEPS = 20


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _cpu_seconds() -> float:
    # Processor time of this process, user plus system. On a shared machine it
    # varies far less with the other load than the wall time does.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 2)


def _emit(record: dict[str, Any]) -> None:
    record = {**record, "cpu_seconds": _cpu_seconds(), "load_average": round(os.getloadavg()[0], 2)}
    print(json.dumps(record), flush=True)


# --------------------------------------------------------------------------- child: compute


def read_log(path: Path) -> Iterator[InteractionRecord]:
    """Yield the rows of a generated CSV; the generator wrote them, so they are not validated."""
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.reader(stream)
        next(reader)
        for user_id, item_id, interaction_type, timestamp, weight in reader:
            yield InteractionRecord(
                user_id,
                item_id,
                interaction_type,
                int(timestamp),
                float(weight) if weight else None,
            )


def run_compute(path: Path, neighbours: int) -> None:
    """Child process: run the compute step on ``path`` and print a JSON line per phase."""
    config = similarity_config(neighbours)
    started = time.monotonic()
    user_items = group_by_user(read_log(path))
    group_seconds = time.monotonic() - started
    _emit(
        {
            "phase": "group",
            "seconds": round(group_seconds, 2),
            "interactions": user_items.interactions,
            "users": len(user_items.items_by_user),
            "peak_rss_mb": _peak_rss_mb(),
        }
    )

    step = time.monotonic()
    model = ItemModel(user_items, config)
    del user_items
    pairs = sum(len(items) ** 2 for items in model.index.user_items.values())
    index_seconds = time.monotonic() - step
    item_count = len(model.item_ids)
    _emit(
        {
            "phase": "index",
            "seconds": round(index_seconds, 2),
            "items": item_count,
            "pairs": pairs,
            "peak_rss_mb": _peak_rss_mb(),
        }
    )

    step = time.monotonic()
    neighbour_bytes = 0
    largest = 0
    every = max(1, item_count // PROGRESS_STEPS)
    for done, entry in enumerate(model.items(), start=1):
        encoded, _ = encode_neighbours(entry.neighbours)
        size = len(encoded.encode("utf-8"))
        neighbour_bytes += size
        largest = max(largest, size)
        if done % every == 0 and done < item_count:
            _emit(
                {
                    "phase": "rows",
                    "done": done,
                    "of": item_count,
                    "seconds": round(time.monotonic() - step, 2),
                    "peak_rss_mb": _peak_rss_mb(),
                }
            )
    popular = model.most_popular()
    rows_seconds = time.monotonic() - step
    _emit(
        {
            "phase": "done",
            "group_seconds": round(group_seconds, 2),
            "index_seconds": round(index_seconds, 2),
            "rows_seconds": round(rows_seconds, 2),
            "total_seconds": round(time.monotonic() - started, 2),
            "items": item_count,
            "neighbour_bytes": neighbour_bytes,
            "largest_list_bytes": largest,
            "popular": len(popular),
            "peak_rss_mb": _peak_rss_mb(),
        }
    )


# --------------------------------------------------------------------------- child: end to end


def run_end_to_end(path: Path, neighbours: int) -> None:
    """Child process: load ``path`` into an in-memory dynalite, run one build, print its summary."""
    from model_builder import BuilderSettings, build_model
    from tools.build_model import send_builder_logs_to_stderr
    from tools.dynalite import Dynalite
    from tools.loader import load_file
    from tools.template_table import create_model_table, create_table

    # stdout carries this process's JSON result lines only.
    send_builder_logs_to_stderr(logging.WARNING)
    with Dynalite(port=0) as server:
        client = server.client()
        create_table(client, "UserInteractions")
        create_model_table(client, "RecommendationModels")
        step = time.monotonic()
        report = load_file(path, "UserInteractions", client=client, progress=False)
        load_seconds = time.monotonic() - step
        _emit({"phase": "load", "seconds": round(load_seconds, 2), "rows": report.rows_written})

        settings = BuilderSettings(
            table_name="UserInteractions",
            model_table_name="RecommendationModels",
            neighbours_per_item=neighbours,
            model=similarity_config(neighbours),
        )
        summary = build_model(client, settings)
        _emit(
            {
                "phase": "done",
                "load_seconds": round(load_seconds, 2),
                **summary,
                "peak_rss_mb": _peak_rss_mb(),
            }
        )


# --------------------------------------------------------------------------- parent


def ensure_log(size: int, data_dir: Path) -> Path:
    """Return the generated log of ``size`` rows, writing it first if it is not cached."""
    path = data_dir / f"interactions-{size}-seed{SEED}.csv"
    if path.is_file():
        logger.info("Using the cached log %s", path)
        return path
    write_csv(GeneratorSettings(interactions=size, seed=SEED), path)
    return path


def run_child(arguments: Sequence[str], time_cap_seconds: float) -> dict[str, Any]:
    """Run a child mode of this module; return its last JSON line, with status and wall time.

    A child still running at the cap is killed: status "timed out", and the
    last line shows the phase it had reached.
    """
    command = [sys.executable, "-m", "tools.bench_builder", *arguments]
    started = time.monotonic()
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: list[dict[str, Any]] = []
    errors: list[str] = []

    def read_stdout() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            lines.append(record)
            logger.info("  %s", record)

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            errors.append(line)
            del errors[:-40]  # the tail is enough to explain a failure

    readers = [threading.Thread(target=read_stdout), threading.Thread(target=read_stderr)]
    for reader in readers:
        reader.start()
    try:
        process.wait(timeout=time_cap_seconds)
        status = (
            "finished" if process.returncode == 0 else f"failed (exit code {process.returncode})"
        )
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        status = "timed out"
    for reader in readers:
        reader.join()
    result = dict(lines[-1]) if lines else {}
    result["status"] = status
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    if lines:
        result["phases"] = lines
    if status.startswith("failed"):
        result["stderr_tail"] = "".join(errors[-10:])
    return result


def extrapolate(results: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Fit ``value = a * n ** b`` through the two largest finished sizes, for CPU time and memory.

    Returns the fitted exponents and the sizes where the compute step alone
    would reach the Lambda timeout and memory limit. This is an extrapolation
    from a power law through two points, not a measurement.
    """
    finished = [result for result in results if result.get("status") == "finished"]
    if len(finished) < 2:
        return None
    small, large = sorted(finished, key=lambda result: result["interactions"])[-2:]
    ratio = math.log(large["interactions"] / small["interactions"])

    def solve(key: str, limit: float) -> tuple[float, float]:
        exponent = math.log(large[key] / small[key]) / ratio
        size = large["interactions"] * (limit / large[key]) ** (1 / exponent)
        return exponent, size

    time_exponent, time_limit_size = solve("cpu_seconds", LAMBDA_TIMEOUT_SECONDS)
    memory_exponent, memory_limit_size = solve("peak_rss_mb", LAMBDA_MEMORY_MB)
    return {
        "from_sizes": [small["interactions"], large["interactions"]],
        "time_exponent": round(time_exponent, 2),
        "memory_exponent": round(memory_exponent, 2),
        "interactions_at_timeout": int(time_limit_size),
        "interactions_at_memory_limit": int(memory_limit_size),
    }


def _number(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def render_table(report: dict[str, Any]) -> str:
    """Render the results as the markdown block that goes between the doc's markers."""
    lines = [
        BEGIN_MARKER,
        (
            f"Measured {report['measured_at']} by `python -m tools.bench_builder` on"
            f" {report['machine']}, Python {report['python']}, N = {report['neighbours']}"
            f" neighbours per item, time cap {report['time_cap_minutes']} min per size."
        ),
        "",
        (
            "| Interactions | Users | Items | Pairs Σ\\|H_u\\|² | Group s | Index s | Rows s"
            " | Total s | CPU s | Load avg | Peak RSS MB | Neighbour lists MB | Status |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for result in report["compute"]:
        phases = {phase["phase"]: phase for phase in result.get("phases", [])}
        group = phases.get("group", {})
        index = phases.get("index", {})
        status = result["status"]
        if status == "timed out":
            rows = phases.get("rows")
            if rows is not None:
                projected = rows["seconds"] * rows["of"] / rows["done"]
                status += (
                    f" in rows, {rows['done']:,} of {rows['of']:,} items after"
                    f" {rows['seconds']:,.0f} s (rows step at that pace: about {projected:,.0f} s)"
                )
            else:
                status += f" after phase {result.get('phase', 'start')}"
        neighbour_mb = (
            result["neighbour_bytes"] / 1_000_000 if "neighbour_bytes" in result else None
        )
        lines.append(
            "| "
            + " | ".join(
                [
                    _number(result["interactions"]),
                    _number(group.get("users")),
                    _number(index.get("items")),
                    _number(index.get("pairs")),
                    _number(group.get("seconds")),
                    _number(index.get("seconds")),
                    _number(result.get("rows_seconds")),
                    _number(result.get("total_seconds")),
                    _number(result.get("cpu_seconds")),
                    _number(result.get("load_average")),
                    _number(result.get("peak_rss_mb")),
                    _number(neighbour_mb),
                    status,
                ]
            )
            + " |"
        )

    e2e = report.get("end_to_end")
    if e2e:
        lines += [
            "",
            (
                f"End to end through dynalite 4.0.0 (in memory, same machine), {e2e['interactions']:,}"
                f" interactions, default builder settings: status {e2e['status']}."
            ),
            "",
            (
                "| Data load s (not part of a build) | Scan s | Index s | Compute + write s | Publish s"
                " | Build total s | Items written | BatchWriteItem calls | Peak RSS MB |"
            ),
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            "| "
            + " | ".join(
                _number(e2e.get(key))
                for key in (
                    "load_seconds",
                    "scan_seconds",
                    "index_seconds",
                    "compute_and_write_seconds",
                    "publish_seconds",
                    "total_seconds",
                    "items_written",
                    "batch_calls",
                    "peak_rss_mb",
                )
            )
            + " |",
        ]

    fit = report.get("extrapolation")
    if fit:
        lines += [
            "",
            (
                f"Extrapolation, not a measurement: a power law through the {fit['from_sizes'][0]:,}"
                f" and {fit['from_sizes'][1]:,} runs gives compute CPU time ∝ n^{fit['time_exponent']}"
                f" and peak memory ∝ n^{fit['memory_exponent']}. The compute step alone would reach"
                f" Lambda's {LAMBDA_TIMEOUT_SECONDS} s at about {fit['interactions_at_timeout']:,}"
                f" interactions and {LAMBDA_MEMORY_MB:,} MB at about"
                f" {fit['interactions_at_memory_limit']:,}, on a CPU as fast as this one."
            ),
        ]
    lines.append(END_MARKER)
    return "\n".join(lines)


def update_doc(doc: Path, block: str) -> None:
    """Replace the text between the markers of ``doc`` (inclusive) with ``block``."""
    text = doc.read_text(encoding="utf-8")
    begin = text.find(BEGIN_MARKER)
    end = text.find(END_MARKER)
    if begin < 0 or end < begin:
        raise SystemExit(
            f"{doc} has no {BEGIN_MARKER} ... {END_MARKER} block; add one where the table goes"
        )
    doc.write_text(text[:begin] + block + text[end + len(END_MARKER) :], encoding="utf-8")


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive integers, got {text!r}")
    return sizes


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench_builder",
        description="Measure the model builder's compute step and one end-to-end build.",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=list(DEFAULT_SIZES),
        help="interaction counts to measure, comma-separated (default: 100000,1000000,10000000)",
    )
    parser.add_argument(
        "--neighbours",
        type=int,
        default=DEFAULT_NEIGHBOURS_PER_ITEM,
        help="neighbours kept per item (default: %(default)s)",
    )
    parser.add_argument(
        "--time-cap-minutes",
        type=float,
        default=20.0,
        help="wall time after which a size's child process is killed (default: %(default)s)",
    )
    parser.add_argument(
        "--e2e-size",
        type=int,
        default=100_000,
        help="interactions of the end-to-end build through dynalite (default: %(default)s)",
    )
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end build")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="folder of the generated logs (default: .local/bench)",
    )
    parser.add_argument(
        "--doc",
        type=Path,
        default=DEFAULT_DOC,
        help="page whose table is rewritten (default: docs/model.md)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=DEFAULT_RESULTS,
        help="JSON file for the raw results (default: docs/model-bench.json)",
    )
    # Internal: the child modes.
    parser.add_argument("--child-compute", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-e2e", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m tools.bench_builder`; return the exit code."""
    args = _parse_args(argv)
    if args.child_compute is not None:
        run_compute(args.child_compute, args.neighbours)
        return 0
    if args.child_e2e is not None:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        run_end_to_end(args.child_e2e, args.neighbours)
        return 0

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cap = args.time_cap_minutes * 60
    report: dict[str, Any] = {
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} vCPU {platform.machine()} ({_cpu_name()}),"
        f" {_memory_gb()} GB RAM",
        "python": platform.python_version(),
        "neighbours": args.neighbours,
        "time_cap_minutes": args.time_cap_minutes,
        "compute": [],
    }
    for size in args.sizes:
        path = ensure_log(size, args.data_dir)
        logger.info("Compute step on %s (cap %.0f min)", path, args.time_cap_minutes)
        result = run_child(
            ["--child-compute", str(path), "--neighbours", str(args.neighbours)], cap
        )
        result["interactions"] = size
        report["compute"].append(result)
        logger.info(
            "%d interactions: %s after %.1f s", size, result["status"], result["wall_seconds"]
        )
    report["extrapolation"] = extrapolate(report["compute"])

    if not args.no_e2e:
        path = ensure_log(args.e2e_size, args.data_dir)
        logger.info("End-to-end build through dynalite on %s", path)
        result = run_child(["--child-e2e", str(path), "--neighbours", str(args.neighbours)], cap)
        result["interactions"] = args.e2e_size
        report["end_to_end"] = result

    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    update_doc(args.doc, render_table(report))
    logger.info("Wrote %s and the table in %s", args.results, args.doc)
    return 0


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gb() -> int:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
