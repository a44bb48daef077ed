"""Measure the initialisation time of the Lambda handler module against boto3 alone.

    python -m tools.cold_start [--runs 20] [--warmup 2] [--output docs/benchmarks.md | --no-docs]

Each run is a fresh Python process. The handler run times `import app`, which is what the
Lambda init phase executes for this function: the imports, the settings, the thread pool and
the DynamoDB client. The baseline run times `import boto3` plus `boto3.client("dynamodb")`,
the least that any Python function using DynamoDB pays. Runs alternate between the two, so
a change in machine load affects both alike, after `--warmup` untimed runs of each that fill
the file-system cache and write the .pyc files.

The children get the function's environment from template.yaml, dummy credentials and
AWS_ENDPOINT_URL_DYNAMODB pointing at a socket that this process listens on at 127.0.0.1.
That socket counts connections, which shows that no network call happens at import. One
more handler run with `python -X importtime` gives the direct imports of app.py that take
the longest. The tool prints a report, writes the cold_start section of docs/benchmarks.md,
and prints a JSON summary as the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tools.benchmark_page import (
    BENCHMARKS_PAGE,
    BenchmarkPageError,
    configure_logging,
    git_commit,
    write_section,
)
from tools.dynalite import HOST
from tools.load_test import machine_description
from tools.template_table import TemplateError, function_settings

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
SRC_DIR = REPO_ROOT / "src"
SECTION_NAME = "cold_start"
CHILD_TIMEOUT_S = 120.0
IMPORTS_SHOWN = 8

# Each child prints one JSON line: the seconds spent in the timed block.
HANDLER_CHILD = """
import json, sys, time
sys.path.insert(0, {src!r})
started = time.perf_counter()
import app
elapsed = time.perf_counter() - started
print(json.dumps({{"init_s": elapsed, "service_ready": app._service is not None}}))
"""
BASELINE_CHILD = """
import json, time
started = time.perf_counter()
import boto3
client = boto3.client("dynamodb")
elapsed = time.perf_counter() - started
print(json.dumps({"init_s": elapsed, "service_ready": client is not None}))
"""

# One line of `python -X importtime`: "import time: <self us> | <cumulative us> | <name>",
# with two spaces of indentation per nesting level before the name.
IMPORTTIME_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)")


class ColdStartError(RuntimeError):
    """A child process failed; the message contains its output."""


@dataclass(frozen=True)
class ChildRun:
    """One fresh process: time inside the timed block, and the whole process as seen outside."""

    init_s: float
    process_s: float


def child_environment(endpoint_url: str) -> dict[str, str]:
    """Return the environment of a child: the function's variables and dummy AWS settings."""
    environment = {
        name: os.environ[name] for name in ("PATH", "LANG", "LC_ALL") if name in os.environ
    }
    environment.update(function_settings().environment)
    environment.update(
        {
            "AWS_ENDPOINT_URL_DYNAMODB": endpoint_url,
            # A local endpoint checks no credentials; these never reach AWS.
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    return environment


def run_child(
    code: str, environment: Mapping[str, str], work_dir: Path, flags: Sequence[str] = ()
) -> tuple[ChildRun, str]:
    """Run `code` in a fresh interpreter; return its timings and its stderr."""
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, *flags, "-c", code],
        cwd=work_dir,
        env=dict(environment),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    process_s = time.perf_counter() - started
    if completed.returncode != 0:
        raise ColdStartError(
            f"the child process exited with code {completed.returncode}:\n{completed.stderr[-2000:]}"
        )
    try:
        result = json.loads(completed.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise ColdStartError(
            f"the child process printed no JSON result; stdout: {completed.stdout[-500:]!r},"
            f" stderr: {completed.stderr[-1500:]}"
        ) from None
    if not result.get("service_ready"):
        # The handler caught a ConfigurationError, which skips the client and the thread pool,
        # so its time would be too short.
        raise ColdStartError(
            f"the handler started without its service (invalid configuration):\n"
            f"{completed.stderr[-1500:]}"
        )
    return ChildRun(init_s=float(result["init_s"]), process_s=process_s), completed.stderr


def count_connections(listener: socket.socket) -> int:
    """Accept and close every pending connection on `listener`; return how many there were."""
    listener.setblocking(False)
    count = 0
    while True:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return count
        connection.close()
        count += 1


def slowest_app_imports(importtime_output: str, count: int = IMPORTS_SHOWN) -> list[dict[str, Any]]:
    """Return the direct imports of `app` with the largest cumulative time, in milliseconds.

    `-X importtime` prints a module after the modules it imports, so the direct imports of
    app are the lines one level deeper than app between app and the previous line at its level.
    """
    entries: list[tuple[int, str, int]] = []
    for line in importtime_output.splitlines():
        match = IMPORTTIME_LINE.match(line)
        if match:
            level = len(match.group(3)) // 2
            entries.append((level, match.group(4), int(match.group(2))))
    app_index = next((index for index, entry in enumerate(entries) if entry[1] == "app"), None)
    if app_index is None:
        return []
    app_level = entries[app_index][0]
    direct: list[tuple[str, int]] = []
    for level, name, cumulative_us in reversed(entries[:app_index]):
        if level <= app_level:
            break
        if level == app_level + 1:
            direct.append((name, cumulative_us))
    direct.sort(key=lambda entry: entry[1], reverse=True)
    total_ms = entries[app_index][2] / 1000
    return [
        {"module": name, "cumulative_ms": round(us / 1000, 1), "share_of_app": us / 1000 / total_ms}
        for name, us in direct[:count]
    ]


def _stats(values: Sequence[float]) -> dict[str, float]:
    milliseconds = [value * 1000 for value in values]
    return {
        "median_ms": round(statistics.median(milliseconds), 1),
        "min_ms": round(min(milliseconds), 1),
        "max_ms": round(max(milliseconds), 1),
        "stdev_ms": round(statistics.stdev(milliseconds), 1) if len(milliseconds) > 1 else 0.0,
    }


def measure(runs: int, warmup: int) -> dict[str, Any]:
    """Run the children and return the figures; see the module docstring."""
    handler_code = HANDLER_CHILD.format(src=str(SRC_DIR))
    handler_runs: list[ChildRun] = []
    baseline_runs: list[ChildRun] = []
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener,
        tempfile.TemporaryDirectory(prefix="cold-start-") as work_name,
    ):
        listener.bind((HOST, 0))
        listener.listen(16)
        endpoint_url = f"http://{HOST}:{listener.getsockname()[1]}"
        environment = child_environment(endpoint_url)
        work_dir = Path(work_name)
        started = time.monotonic()
        for _ in range(warmup):
            run_child(handler_code, environment, work_dir)
            run_child(BASELINE_CHILD, environment, work_dir)
        for index in range(runs):
            # Alternate which one goes first, so neither always follows the other.
            pair = [("handler", handler_code), ("baseline", BASELINE_CHILD)]
            if index % 2:
                pair.reverse()
            for name, code in pair:
                result, _ = run_child(code, environment, work_dir)
                (handler_runs if name == "handler" else baseline_runs).append(result)
        _, importtime_output = run_child(handler_code, environment, work_dir, ["-X", "importtime"])
        connections = count_connections(listener)
        elapsed = time.monotonic() - started

    handler = _stats([run.init_s for run in handler_runs])
    baseline = _stats([run.init_s for run in baseline_runs])
    logger.info(
        "%d runs each in %.1f s: handler median %.1f ms, baseline median %.1f ms",
        runs,
        elapsed,
        handler["median_ms"],
        baseline["median_ms"],
    )
    return {
        "runs": runs,
        "warmup": warmup,
        "handler_init": handler,
        "baseline_init": baseline,
        "ratio_of_medians": round(handler["median_ms"] / baseline["median_ms"], 2),
        "handler_process": _stats([run.process_s for run in handler_runs]),
        "baseline_process": _stats([run.process_s for run in baseline_runs]),
        "endpoint_connections": connections,
        "slowest_app_imports": slowest_app_imports(importtime_output),
        "elapsed_s": round(elapsed, 1),
    }


def render_section(summary: dict[str, Any]) -> str:
    """Render the cold_start section of docs/benchmarks.md (markers are added by the writer)."""
    machine = summary["machine"]
    handler, baseline = summary["handler_init"], summary["baseline_init"]
    handler_process, baseline_process = summary["handler_process"], summary["baseline_process"]
    connections = summary["endpoint_connections"]
    lines = [
        "## Cold start: handler initialisation against boto3 alone",
        "",
        "Written by `tools/cold_start.py`; rerun the command below to refresh this section.",
        "",
        f"- Date: {summary['started_at']}.",
        f"- Command: `{summary['command']}`, on commit {summary['commit'] or 'unknown'}.",
        (
            f"- Machine: {machine['cpu_cores']} cores, {machine['cpu_model']},"
            f" {machine['platform']}; Python {machine['python']}. Load average over the"
            f" minute before the start: {machine['load_average_1min']}."
        ),
        (
            f"- Method: {summary['runs']} fresh Python processes each, alternating, after"
            f" {summary['warmup']} untimed runs each (file-system cache warm, .pyc files"
            " written). Handler: `time.perf_counter()` around `import app`, which parses the"
            " settings and creates the thread pool and the DynamoDB client. Baseline: around"
            ' `import boto3` plus `boto3.client("dynamodb")`. The environment is the'
            " function's from template.yaml with dummy credentials, and"
            " AWS_ENDPOINT_URL_DYNAMODB points at a socket on 127.0.0.1 that received"
            f" {connections} connections, so no network call happened at import."
        ),
        "",
        "| per fresh process | handler (`import app`) | baseline (boto3 + client) | ratio |",
        "| --- | ---: | ---: | ---: |",
        (
            f"| init median (ms) | {handler['median_ms']:,.1f} | {baseline['median_ms']:,.1f}"
            f" | {summary['ratio_of_medians']:.2f}x |"
        ),
        (
            f"| init min (ms) | {handler['min_ms']:,.1f} | {baseline['min_ms']:,.1f}"
            f" | {handler['min_ms'] / baseline['min_ms']:.2f}x |"
        ),
        f"| init max (ms) | {handler['max_ms']:,.1f} | {baseline['max_ms']:,.1f} | |",
        f"| init standard deviation (ms) | {handler['stdev_ms']:.1f} | {baseline['stdev_ms']:.1f} | |",
        (
            f"| whole process, median (ms) | {handler_process['median_ms']:,.1f}"
            f" | {baseline_process['median_ms']:,.1f} | |"
        ),
        "",
        (
            "The whole process adds the interpreter's own start and exit to the init time. The"
            " minimum is the figure least disturbed by other work on the machine."
        ),
    ]
    imports = summary["slowest_app_imports"]
    if imports:
        lines += [
            "",
            (
                "Direct imports of app.py with the largest cumulative import time, from one more run"
                " with `python -X importtime` (which slows imports a little):"
            ),
            "",
            "| module | cumulative import (ms) | share of `import app` |",
            "| --- | ---: | ---: |",
        ]
        lines += [
            f"| `{entry['module']}` | {entry['cumulative_ms']:.1f} | {entry['share_of_app']:.0%} |"
            for entry in imports
        ]
    lines += [
        "",
        (
            "On Lambda the init phase also runs the runtime's own bootstrap, and Lambda allocates"
            " CPU power in proportion to the configured memory (the template sets"
            f" {summary['memory_mb']} MB). So the absolute times differ from this machine's, while"
            " the ratio shows what the handler module adds over the least that a Python function"
            " using DynamoDB pays."
        ),
        "",
    ]
    return "\n".join(lines)


def format_report(summary: dict[str, Any]) -> str:
    """Return the human-readable report of the measurement."""
    handler, baseline = summary["handler_init"], summary["baseline_init"]
    lines = [
        f"Cold start, {summary['runs']} fresh processes each:",
        (
            f"  handler  (import app):          median {handler['median_ms']:.1f} ms"
            f" (min {handler['min_ms']:.1f}, max {handler['max_ms']:.1f})"
        ),
        (
            f"  baseline (boto3 + client):      median {baseline['median_ms']:.1f} ms"
            f" (min {baseline['min_ms']:.1f}, max {baseline['max_ms']:.1f})"
        ),
        f"  ratio of medians:               {summary['ratio_of_medians']:.2f}x",
        f"  connections to the endpoint:    {summary['endpoint_connections']}",
    ]
    for entry in summary["slowest_app_imports"]:
        lines.append(f"  import {entry['module']}: {entry['cumulative_ms']:.1f} ms")
    return "\n".join(lines)


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if not 1 <= number <= 1000:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to 1000, got {number}")
    return number


def _non_negative_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer of 0 or more, got {value!r}"
        ) from None
    if not 0 <= number <= 100:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 100, got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """Build the command-line parser of `python -m tools.cold_start`."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.cold_start",
        description="Time the initialisation of the handler module against import boto3 plus"
        " one DynamoDB client, each in fresh Python processes.",
    )
    parser.add_argument(
        "--runs", type=_positive_int, default=20, help="timed processes of each kind (default: 20)"
    )
    parser.add_argument(
        "--warmup",
        type=_non_negative_int,
        default=2,
        help="untimed processes of each kind first (default: 2)",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--output",
        type=Path,
        default=BENCHMARKS_PAGE,
        help="Markdown page whose cold_start section is rewritten (default: %(default)s)",
    )
    output.add_argument("--no-docs", action="store_true", help="write no Markdown page")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the measurement; return 0 on success, 1 when a child process or the page failed."""
    args = build_parser().parse_args(argv)
    configure_logging()
    command = shlex.join(["python", "-m", "tools.cold_start", *(argv or sys.argv[1:])])
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    machine = machine_description()
    try:
        summary = measure(args.runs, args.warmup)
        memory_mb = function_settings().memory_mb
    except (ColdStartError, TemplateError, subprocess.TimeoutExpired, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    summary.update(
        {
            "tool": "cold_start",
            "started_at": started_at,
            "command": command,
            "commit": git_commit(),
            "machine": machine,
            "memory_mb": memory_mb,
        }
    )

    print(format_report(summary))
    if not args.no_docs:
        try:
            write_section(args.output, SECTION_NAME, render_section(summary))
        except (BenchmarkPageError, OSError) as error:
            print(f"error: cannot update {args.output}: {error}", file=sys.stderr)
            return 1
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
