"""Bounded load test of GET /recommendations/{user_id} against the local stack on 127.0.0.1.

    python -m tools.load_test [--clients 32] [--duration 60] [--seed 7] [--limit 10]
        [--ratings PATH] [--base-url http://127.0.0.1:3000] [--timeout 120]
        [--output docs/benchmarks.md | --no-docs]

Without --base-url the tool starts the stack itself and stops it at the end: an in-memory
dynalite, the table from template.yaml loaded with the ratings file, and
`python -m tools.local_api` as a subprocess on a free port. With --base-url it sends the
requests to a front end that the user started; only loopback addresses are accepted.

Each client is a thread with one keep-alive HTTP connection. It sends GET
/recommendations/{user} for users drawn from the ratings file with its own seeded generator,
until --duration seconds have passed since the start, then finishes the request in flight.
--clients takes a comma-separated list, such as 1,32, to run one phase per value. The tool
prints a report, writes the load_test section of docs/benchmarks.md, and prints a JSON
summary as the last line of stdout.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import math
import os
import platform
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any
from urllib.parse import quote, urlsplit

from tools.benchmark_page import (
    BENCHMARKS_PAGE,
    BenchmarkPageError,
    configure_logging,
    git_commit,
    write_section,
)
from tools.dynalite import HOST, Dynalite, DynaliteError, free_port
from tools.interaction_formats import READERS, FormatError, ParsedRow, detect_format, open_text
from tools.loader import LoaderError, load_file
from tools.local_api import NonLoopbackHostError, validate_host
from tools.template_table import TemplateError, create_table

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RATINGS = REPO_ROOT.parent / "shared" / "datasets" / "ml-latest-small" / "ratings.csv"
DYNALITE_PACKAGE_JSON = REPO_ROOT / "node_modules" / "dynalite" / "package.json"
SECTION_NAME = "load_test"
TABLE_NAME = "UserInteractions"
SERVED_MESSAGE = "Recommendations served"

API_STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 5.0
# Messages kept per error kind for the report.
ERROR_SAMPLES_KEPT = 3


class LoadTestError(RuntimeError):
    """The load test cannot run; the message names the step and what to do."""


class _Stopped(BaseException):
    """Raised in the main thread by the SIGTERM handler, so that every started process stops."""


# --------------------------------------------------------------------------- users


def read_user_ids(path: Path) -> list[str]:
    """Return the distinct user ids of the valid rows of `path`, sorted, in any loader format."""
    try:
        file_format = detect_format(path)
        users: set[str] = set()
        with path.open("rb") as binary, open_text(binary) as text:
            for row in READERS[file_format](text):
                if isinstance(row, ParsedRow):
                    users.add(row.interaction.user_id)
    except (OSError, FormatError) as error:
        raise LoadTestError(f"cannot read users from {path}: {error}; pass --ratings") from None
    if not users:
        raise LoadTestError(f"{path} has no valid rows, so there is no user to request")
    return sorted(users)


# --------------------------------------------------------------------------- local stack


@dataclass
class StackInfo:
    """What the tool started, for the report."""

    base_url: str
    rows_loaded: int = 0
    load_seconds: float = 0.0
    dynalite_version: str | None = None
    handler_log: Path | None = None  # stdout of local_api: the handler's JSON log lines


def _stop_process(process: subprocess.Popen[bytes], name: str) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.warning("%s (pid %d) ignored SIGTERM; killing it", name, process.pid)
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
    logger.info("%s stopped (pid %d, exit code %s)", name, process.pid, process.returncode)


def _dynalite_version() -> str | None:
    try:
        package = json.loads(DYNALITE_PACKAGE_JSON.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    version = package.get("version") if isinstance(package, dict) else None
    return str(version) if version else None


def _tail(path: Path, characters: int = 2000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-characters:]
    except OSError:
        return ""


def _api_environment(endpoint_url: str) -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN")
    }
    environment.update(
        {
            "AWS_ENDPOINT_URL_DYNAMODB": endpoint_url,
            # A local server checks no credentials; these never reach AWS.
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "TABLE_NAME": TABLE_NAME,
            # The handler's log lines are read while the test runs.
            "PYTHONUNBUFFERED": "1",
        }
    )
    return environment


def _wait_until_serving(
    process: subprocess.Popen[bytes], base_url: str, user_id: str, errors_path: Path
) -> None:
    split = urlsplit(base_url)
    deadline = time.monotonic() + API_STARTUP_TIMEOUT_S
    last_error = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LoadTestError(
                f"tools.local_api exited with code {process.returncode} while starting."
                f" Its output:\n{_tail(errors_path)}"
            )
        connection = http.client.HTTPConnection(split.hostname, split.port, timeout=30)
        try:
            connection.request("GET", f"/recommendations/{quote(user_id, safe='')}")
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                return
            last_error = f"HTTP {response.status}"
        except (OSError, http.client.HTTPException) as error:
            last_error = f"{type(error).__name__}: {error}"
        finally:
            connection.close()
        time.sleep(0.2)
    raise LoadTestError(
        f"tools.local_api did not return 200 on {base_url} within {API_STARTUP_TIMEOUT_S:.0f} s"
        f" (last: {last_error}). Its output:\n{_tail(errors_path)}"
    )


@contextmanager
def local_stack(ratings: Path, probe_user: str) -> Iterator[StackInfo]:
    """Start dynalite, load `ratings`, start tools.local_api; stop both on exit."""
    with ExitStack() as stack:
        dynalite = stack.enter_context(Dynalite(port=0))
        client = dynalite.client()
        create_table(client, TABLE_NAME)
        started = time.monotonic()
        report = load_file(ratings, TABLE_NAME, client=client, progress=False)
        load_seconds = time.monotonic() - started
        logger.info("Loaded %d rows in %.1f s", report.rows_written, load_seconds)

        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="load-test-")))
        handler_log = work_dir / "local_api.stdout"
        errors_path = work_dir / "local_api.stderr"
        stdout: IO[bytes] = stack.enter_context(handler_log.open("wb"))
        stderr: IO[bytes] = stack.enter_context(errors_path.open("wb"))
        port = free_port()
        base_url = f"http://{HOST}:{port}"
        process = subprocess.Popen(
            [sys.executable, "-m", "tools.local_api", "--host", HOST, "--port", str(port)],
            cwd=REPO_ROOT,
            env=_api_environment(dynalite.endpoint_url),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
        stack.callback(_stop_process, process, "tools.local_api")
        logger.info("Starting tools.local_api on %s (pid %d)", base_url, process.pid)
        _wait_until_serving(process, base_url, probe_user, errors_path)
        yield StackInfo(
            base_url=base_url,
            rows_loaded=report.rows_written,
            load_seconds=load_seconds,
            dynalite_version=_dynalite_version(),
            handler_log=handler_log,
        )


# --------------------------------------------------------------------------- clients


@dataclass
class ClientResult:
    """What one client thread measured."""

    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: dict[str, list[str]] = field(default_factory=dict)

    def add_error(self, kind: str, sample: str) -> None:
        self.errors[kind] += 1
        samples = self.error_samples.setdefault(kind, [])
        if len(samples) < ERROR_SAMPLES_KEPT:
            samples.append(sample[:300])


@dataclass
class PhaseResult:
    """One phase: `clients` threads for `duration_s` seconds."""

    clients: int
    duration_s: float
    elapsed_s: float
    latencies_s: list[float]
    errors: Counter[str]
    error_samples: dict[str, list[str]]
    handler_ms: list[float]


def _check_body(body: bytes, user_id: str, limit: int) -> str | None:
    """Return why a 200 body breaks the API contract, or None when it is valid."""
    try:
        document = json.loads(body)
    except ValueError:
        return "the body is not JSON"
    if not isinstance(document, dict) or document.get("user_id") != user_id:
        return f"user_id in the body is not {user_id!r}"
    recommendations = document.get("recommendations")
    if not isinstance(recommendations, list) or len(recommendations) > limit:
        return f"recommendations is not a list of at most {limit} items"
    return None


def _run_client(
    host: str,
    port: int,
    users: Sequence[str],
    rng: random.Random,
    limit: int,
    timeout_s: float,
    start: threading.Event,
    deadline: list[float],
    stop: threading.Event,
    result: ClientResult,
) -> None:
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        # Connect before the start, so that simultaneous connects do not overflow the
        # server's listen backlog (5, the socketserver default) and count as latency.
        connection.connect()
    except OSError as error:
        result.add_error(type(error).__name__, str(error))
    start.wait()
    while not stop.is_set() and time.monotonic() < deadline[0]:
        user_id = rng.choice(users)
        path = f"/recommendations/{quote(user_id, safe='')}?limit={limit}"
        sent = time.perf_counter()
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            result.add_error(type(error).__name__, f"GET {path}: {error}")
            connection.close()
            connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
            continue
        elapsed = time.perf_counter() - sent
        if response.status != 200:
            result.add_error(f"HTTP {response.status}", f"GET {path}: {body[:200]!r}")
            continue
        problem = _check_body(body, user_id, limit)
        if problem is not None:
            result.add_error("invalid 200 body", f"GET {path}: {problem}")
            continue
        result.latencies_s.append(elapsed)
    connection.close()


def _read_handler_times(log_path: Path | None, offset: int) -> tuple[list[float], int]:
    """Return the elapsed_ms of the handler's "served" log lines after byte `offset`."""
    if log_path is None:
        return [], offset
    times: list[float] = []
    with log_path.open("rb") as log:
        log.seek(offset)
        data = log.read()
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("message") == SERVED_MESSAGE:
            elapsed = record.get("elapsed_ms")
            if isinstance(elapsed, (int, float)):
                times.append(float(elapsed))
    return times, offset + len(data)


def run_phase(
    base_url: str,
    users: Sequence[str],
    *,
    clients: int,
    duration_s: float,
    seed: int,
    limit: int,
    timeout_s: float,
    handler_log: Path | None = None,
) -> PhaseResult:
    """Run `clients` client threads for `duration_s` seconds and collect what they measured."""
    split = urlsplit(base_url)
    host, port = split.hostname or HOST, split.port or 80
    log_offset = handler_log.stat().st_size if handler_log is not None else 0
    start = threading.Event()
    stop = threading.Event()
    deadline = [math.inf]
    results = [ClientResult() for _ in range(clients)]
    threads = [
        threading.Thread(
            target=_run_client,
            args=(
                host,
                port,
                users,
                # One generator per client, derived from the seed, so a run is repeatable.
                random.Random(f"{seed}:{clients}:{index}"),
                limit,
                timeout_s,
                start,
                deadline,
                stop,
                results[index],
            ),
            name=f"load-client-{index}",
            daemon=True,
        )
        for index in range(clients)
    ]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    deadline[0] = started + duration_s
    start.set()
    logger.info("Phase started: %d clients for %.0f s on %s", clients, duration_s, base_url)
    try:
        for thread in threads:
            # A client stops after the deadline plus at most one request timeout.
            thread.join(timeout=max(0.0, deadline[0] - time.monotonic()) + timeout_s + 5)
    finally:
        stop.set()
    elapsed = time.monotonic() - started
    hung = [thread.name for thread in threads if thread.is_alive()]
    if hung:
        raise LoadTestError(f"client threads {hung} did not stop after their request timeout")
    # The front end writes the log line before the response, so every line is there now.
    handler_ms, _ = _read_handler_times(handler_log, log_offset)

    errors: Counter[str] = Counter()
    samples: dict[str, list[str]] = {}
    latencies: list[float] = []
    for result in results:
        latencies.extend(result.latencies_s)
        errors.update(result.errors)
        for kind, messages in result.error_samples.items():
            kept = samples.setdefault(kind, [])
            kept.extend(messages[: ERROR_SAMPLES_KEPT - len(kept)])
    logger.info(
        "Phase done: %d clients, %d served, %d errors in %.1f s",
        clients,
        len(latencies),
        sum(errors.values()),
        elapsed,
    )
    return PhaseResult(clients, duration_s, elapsed, latencies, errors, samples, handler_ms)


# --------------------------------------------------------------------------- summary


def percentile(values: Sequence[float], percent: float) -> float | None:
    """Return the nearest-rank percentile of `values`, or None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def _milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def summarize_phase(phase: PhaseResult) -> dict[str, Any]:
    """Return the JSON-ready figures of one phase; latencies in milliseconds."""
    served = len(phase.latencies_s)
    handler = phase.handler_ms
    return {
        "clients": phase.clients,
        "duration_s": phase.duration_s,
        "elapsed_s": round(phase.elapsed_s, 2),
        "requests_served": served,
        "errors": sum(phase.errors.values()),
        "errors_by_kind": dict(sorted(phase.errors.items())),
        "error_samples": phase.error_samples,
        "throughput_rps": round(served / phase.elapsed_s, 2) if phase.elapsed_s > 0 else 0.0,
        "latency_ms": {
            "median": _milliseconds(percentile(phase.latencies_s, 50)),
            "p95": _milliseconds(percentile(phase.latencies_s, 95)),
            "p99": _milliseconds(percentile(phase.latencies_s, 99)),
            "max": _milliseconds(max(phase.latencies_s, default=None)),
        },
        "handler_ms": {
            "lines": len(handler),
            "median": percentile(handler, 50),
            "p95": percentile(handler, 95),
        },
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_description() -> dict[str, Any]:
    """Return the CPU count and model, OS, Python version and current load of this machine."""
    return {
        "cpu_cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        # Other work on the machine competes for its cores and slows every figure.
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def _number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def _queueing_notes(phases: Sequence[dict[str, Any]]) -> list[str]:
    notes: list[str] = []
    for phase in phases:
        clients = phase["clients"]
        latency, handler = phase["latency_ms"], phase["handler_ms"]
        if clients < 2 or not latency["median"] or not handler["median"]:
            continue
        note = (
            f"With {clients} clients the median latency is"
            f" {latency['median'] / handler['median']:.0f} times the median handler time,"
            f" because a request waits for the requests of the other {clients - 1} clients"
            " queued before it."
        )
        # 1.2: a margin for the spread of handler times around their median.
        if latency["max"] > 1.2 * clients * handler["median"]:
            note += (
                " The front end admits the waiting requests through a `threading.Lock`, and the"
                " Python documentation leaves undefined which waiting thread gets a released"
                " lock. So some requests waited for more than one round, and the maximum"
                f" ({latency['max']:,.1f} ms) is well above {clients} median handler times."
            )
        notes += ["", note]
    return notes


def render_section(summary: dict[str, Any]) -> str:
    """Render the load_test section of docs/benchmarks.md (markers are added by the writer)."""
    machine = summary["machine"]
    stack = summary["stack"]
    lines = [
        "## Load test: concurrent GET /recommendations/{user_id}",
        "",
        "Written by `tools/load_test.py`; rerun the command below to refresh this section.",
        "",
        f"- Date: {summary['started_at']}.",
        f"- Command: `{summary['command']}`, on commit {summary['commit'] or 'unknown'}.",
        (
            f"- Machine: {machine['cpu_cores']} cores, {machine['cpu_model']},"
            f" {machine['platform']}; Python {machine['python']}. Load average over the"
            f" minute before the start: {machine['load_average_1min']}."
        ),
    ]
    if stack["started_by_tool"]:
        lines.append(
            f"- Stack started by the tool on 127.0.0.1: dynalite {stack['dynalite'] or ''} in"
            f" memory with `{summary['ratings']}` loaded ({stack['rows_loaded']:,} rows written in"
            f" {stack['load_seconds']:.1f} s), and `python -m tools.local_api` in its own process."
        )
    else:
        lines.append(f"- Stack started by the user at {stack['base_url']}.")
    lines += [
        (
            f"- Requests: each client loops on GET /recommendations/{{user}}?limit={summary['limit']}"
            f" over one keep-alive connection, with users drawn uniformly from the"
            f" {summary['users']:,} users of the ratings file (seed {summary['seed']}). Request"
            f" timeout {summary['timeout_s']:.0f} s."
        ),
        "",
        (
            "| clients | phase time (s) | requests served | errors | throughput (req/s)"
            " | latency median (ms) | p95 (ms) | p99 (ms) | max (ms) | handler time median (ms) |"
        ),
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for phase in summary["phases"]:
        latency = phase["latency_ms"]
        lines.append(
            f"| {phase['clients']} | {phase['elapsed_s']:.1f} | {phase['requests_served']:,}"
            f" | {phase['errors']} | {phase['throughput_rps']:.2f}"
            f" | {_number(latency['median'])} | {_number(latency['p95'])}"
            f" | {_number(latency['p99'])} | {_number(latency['max'])}"
            f" | {_number(phase['handler_ms']['median'])} |"
        )
    lines.append("")
    for phase in summary["phases"]:
        if phase["errors"]:
            kinds = ", ".join(f"{kind}: {count}" for kind, count in phase["errors_by_kind"].items())
            lines.append(f"Errors with {phase['clients']} clients: {kinds}.")
    if not any(phase["errors"] for phase in summary["phases"]):
        lines.append("Errors: none (no non-200 response, no connection error, no invalid body).")
    lines += [
        "",
        (
            f"Each phase sends new requests for {summary['duration_s']:.0f} s, then waits for the"
            " requests in flight. The phase time includes that wait, and the throughput is the"
            " requests served divided by the phase time. Latency is the client-side time from"
            " sending a request to reading the whole response. Handler time is the `elapsed_ms`"
            " that the handler logs for each request it served, that is the time inside"
            " `recommend()` without the wait for its turn."
        ),
        *_queueing_notes(summary["phases"]),
        "",
        (
            "The local front end runs one handler call at a time, like one warm Lambda execution"
            " environment. So these figures measure queueing on one instance: the throughput is"
            " about 1 / handler time whatever the number of clients, and the latency grows with the"
            " clients waiting in the queue. On AWS, Lambda serves concurrent requests with more"
            " execution environments, so throughput grows with the number of instances, up to the"
            " account's concurrency quota, while each request costs about one handler time plus the"
            " API Gateway overhead. The load generator, the front end and dynalite share the"
            " machine's cores, so the handler time here is longer than on an otherwise idle machine."
        ),
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def _client_counts(value: str) -> list[int]:
    counts: list[int] = []
    for part in value.split(","):
        try:
            count = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated client counts such as 32 or 1,32, got {value!r}"
            ) from None
        if not 1 <= count <= 512:
            raise argparse.ArgumentTypeError(f"a client count must be from 1 to 512, got {count}")
        counts.append(count)
    return counts


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(f"expected more than 0 and at most 3600 s, got {value!r}")
    return seconds


def _limit(value: str) -> int:
    try:
        limit = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if not 1 <= limit <= 100:
        raise argparse.ArgumentTypeError(f"limit must be from 1 to 100, got {limit}")
    return limit


def _loopback_url(value: str) -> str:
    split = urlsplit(value)
    if split.scheme != "http" or split.hostname is None or split.port is None:
        raise argparse.ArgumentTypeError(
            f"expected a URL such as http://127.0.0.1:3000, got {value!r}"
        )
    try:
        validate_host(split.hostname)
    except NonLoopbackHostError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value.rstrip("/")


def build_parser() -> argparse.ArgumentParser:
    """Build the command-line parser of `python -m tools.load_test`."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.load_test",
        description="Send concurrent GET /recommendations/{user_id} requests to the local stack"
        " for a fixed time and report throughput, latency and errors.",
    )
    parser.add_argument(
        "--clients",
        type=_client_counts,
        default=[32],
        help="concurrent clients; a comma-separated list runs one phase per value (default: 32)",
    )
    parser.add_argument(
        "--duration",
        type=_positive_seconds,
        default=60.0,
        help="seconds each phase sends new requests (default: 60)",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the user draws (default: 7)")
    parser.add_argument(
        "--limit", type=_limit, default=10, help="limit query option of each request (default: 10)"
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=120.0,
        help="seconds one request may take before it counts as an error (default: 120)",
    )
    parser.add_argument(
        "--ratings",
        type=Path,
        default=DEFAULT_RATINGS,
        help="ratings file whose users are requested, and which is loaded when the tool starts"
        " the stack (default: %(default)s)",
    )
    parser.add_argument(
        "--base-url",
        type=_loopback_url,
        help="front end started by the user, such as http://127.0.0.1:3000; without it the"
        " tool starts dynalite and tools.local_api itself",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--output",
        type=Path,
        default=BENCHMARKS_PAGE,
        help="Markdown page whose load_test section is rewritten (default: %(default)s)",
    )
    output.add_argument("--no-docs", action="store_true", help="write no Markdown page")
    return parser


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Run every phase and return the summary; every process started here is stopped."""
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    machine = machine_description()
    ratings: Path = args.ratings
    if not ratings.is_file():
        raise LoadTestError(f"ratings file {ratings} not found; pass --ratings PATH")
    users = read_user_ids(ratings)
    logger.info("Read %d users from %s", len(users), ratings)

    with ExitStack() as stack:
        if args.base_url:
            stack_info = StackInfo(base_url=args.base_url)
        else:
            stack_info = stack.enter_context(local_stack(ratings, users[0]))
        phases = [
            run_phase(
                stack_info.base_url,
                users,
                clients=clients,
                duration_s=args.duration,
                seed=args.seed,
                limit=args.limit,
                timeout_s=args.timeout,
                handler_log=stack_info.handler_log,
            )
            for clients in args.clients
        ]

    return {
        "tool": "load_test",
        "started_at": started_at,
        "command": command,
        "commit": git_commit(),
        "machine": machine,
        "ratings": ratings.name,
        "users": len(users),
        "seed": args.seed,
        "limit": args.limit,
        "duration_s": args.duration,
        "timeout_s": args.timeout,
        "stack": {
            "started_by_tool": args.base_url is None,
            "base_url": stack_info.base_url,
            "rows_loaded": stack_info.rows_loaded,
            "dynalite": stack_info.dynalite_version,
            "load_seconds": round(stack_info.load_seconds, 1),
        },
        "phases": [summarize_phase(phase) for phase in phases],
    }


def format_report(summary: dict[str, Any]) -> str:
    """Return the human-readable report of the run."""
    lines = [f"Load test of {summary['stack']['base_url']} ({summary['users']} users)"]
    for phase in summary["phases"]:
        latency = phase["latency_ms"]
        lines += [
            (
                f"  {phase['clients']} clients, {phase['elapsed_s']:.1f} s:"
                f" {phase['requests_served']} served, {phase['errors']} errors,"
                f" {phase['throughput_rps']:.2f} req/s"
            ),
            (
                f"    latency ms: median {_number(latency['median'])}, p95 {_number(latency['p95'])},"
                f" p99 {_number(latency['p99'])}, max {_number(latency['max'])};"
                f" handler median {_number(phase['handler_ms']['median'])}"
            ),
        ]
        for kind, count in phase["errors_by_kind"].items():
            lines.append(f"    {kind}: {count}, e.g. {phase['error_samples'][kind][0]}")
    return "\n".join(lines)


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


def main(argv: Sequence[str] | None = None) -> int:
    """Run the load test; return 0 when every request succeeded, 1 otherwise."""
    args = build_parser().parse_args(argv)
    configure_logging()
    command = shlex.join(["python", "-m", "tools.load_test", *(argv or sys.argv[1:])])
    previous_handler = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        summary = run(args, command)
    except (LoadTestError, LoaderError, DynaliteError, TemplateError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, _Stopped):
        print("interrupted: every started process was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_handler)

    print(format_report(summary))
    if not args.no_docs:
        try:
            write_section(args.output, SECTION_NAME, render_section(summary))
        except (BenchmarkPageError, OSError) as error:
            print(f"error: cannot update {args.output}: {error}", file=sys.stderr)
            return 1
    print(json.dumps(summary, sort_keys=True))
    failed = sum(phase["errors"] for phase in summary["phases"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
