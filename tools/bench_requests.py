"""Benchmark GET /recommendations/{user_id} against the naive full-scan recommender.

    python -m tools.bench_requests [--ratings PATH] [--users 100] [--seed 7] [--naive-users 5]
        [--naive-budget-seconds 600] [--warmup 3] [--output docs/benchmarks.md]

Steps, all on 127.0.0.1:

1. Start an in-memory dynalite, create the table from template.yaml and load the ratings file
   with tools.loader.
2. Start `python -m tools.local_api` as a subprocess, so that the HTTP client here and the
   handler there do not share a GIL, and wait until it responds.
3. Send GET /recommendations/{user_id} for `--users` seeded random users, one at a time after
   `--warmup` uncounted requests. Each request is matched to the handler's
   "Recommendations served" log line through the x-amzn-RequestId response header, which the
   front end sets to the event's requestId, the handler's correlation id.
4. Run tools.naive_recommender in this process on a seeded sample of those users, until
   `--naive-users` are measured or `--naive-budget-seconds` run out.
5. Print a JSON summary as the last line of stdout and rewrite the section of `--output`
   between SECTION_START and SECTION_END, keeping the rest of the page.
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
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any
from urllib.parse import quote

from tools.benchmark_page import configure_logging
from tools.dynalite import HOST, Dynalite, DynaliteError, free_port
from tools.interaction_formats import READERS, FormatError, ParsedRow, detect_format, open_text
from tools.loader import LoaderError, load_file
from tools.naive_recommender import NaiveDeadlineError, NaiveRecommender, NaiveStats
from tools.template_table import TemplateError, create_table, function_settings

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
SRC_DIR = REPO_ROOT / "src"
DEFAULT_RATINGS = REPO_ROOT.parent / "shared" / "datasets" / "ml-latest-small" / "ratings.csv"
DEFAULT_OUTPUT = REPO_ROOT / "docs" / "benchmarks.md"
DYNALITE_PACKAGE_JSON = REPO_ROOT / "node_modules" / "dynalite" / "package.json"

SECTION_START = "<!-- bench_requests:start -->"
SECTION_END = "<!-- bench_requests:end -->"
PAGE_HEADER = (
    "# Benchmarks\n\n"
    "Measured figures of the service; each section is written by the tool it names.\n"
)

TABLE_NAME = "UserInteractions"
LIMIT = 10
SERVED_MESSAGE = "Recommendations served"
REQUEST_ID_HEADER = "x-amzn-RequestId"

API_STARTUP_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 60.0
LOG_WAIT_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
# Default maximum integration timeout of an API Gateway REST API.
API_GATEWAY_TIMEOUT_S = 29
# p95 of fewer samples is the maximum or close to it, so it is not reported.
MIN_SAMPLES_FOR_P95 = 20

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class BenchmarkError(RuntimeError):
    """A step of the benchmark failed; the message names the step and what to do next."""


class _Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so that every `finally` stops its process."""


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the `fraction` quantile (0 to 1) by linear interpolation between closest ranks.

    This is the default method of numpy.percentile: the value at rank (n - 1) * fraction.
    """
    if not values:
        raise ValueError("percentile of an empty sequence is undefined")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction!r}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * fraction
    lower = math.floor(rank)
    upper = math.ceil(rank)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (rank - lower)


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    """Return count, mean, median, p95, min and max; p95 is None below MIN_SAMPLES_FOR_P95."""
    if not values:
        return {"count": 0, "mean": None, "median": None, "p95": None, "min": None, "max": None}
    return {
        "count": len(values),
        "mean": statistics.fmean(values),
        "median": percentile(values, 0.5),
        "p95": percentile(values, 0.95) if len(values) >= MIN_SAMPLES_FOR_P95 else None,
        "min": min(values),
        "max": max(values),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


# --------------------------------------------------------------------------- handler log lines


@dataclass(frozen=True)
class ServedRecord:
    """The fields of one "Recommendations served" log line of src/app.py."""

    correlation_id: str | None
    query_calls: int
    items_read: int
    consumed_capacity: float
    rounds: int
    history_items: int
    seed_items: int
    neighbours: int
    elapsed_ms: float
    source: str | None = None


def parse_served_line(line: str) -> ServedRecord | None:
    """Parse a handler log line; return None unless it is a "Recommendations served" record.

    Lines that are not JSON objects (the front end's own logs, tracebacks) are ignored.
    A served record without one of the count fields raises BenchmarkError, because the
    benchmark cannot count that request.
    """
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(document, dict) or document.get("message") != SERVED_MESSAGE:
        return None
    try:
        return ServedRecord(
            correlation_id=document.get("correlation_id"),
            # Every DynamoDB call of the request: Query plus any BatchGetItem.
            query_calls=int(document.get("dynamodb_calls", document["query_calls"])),
            items_read=int(document["items_read"]),
            consumed_capacity=float(document["consumed_capacity"]),
            rounds=int(document["rounds"]),
            history_items=int(document["history_items"]),
            seed_items=int(document["seed_items"]),
            neighbours=int(document["neighbours"]),
            elapsed_ms=float(document["elapsed_ms"]),
            source=document.get("source"),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise BenchmarkError(
            f"the {SERVED_MESSAGE!r} log line lacks a valid field ({error!r}): {text[:300]}; "
            "src/app.py and tools/bench_requests.py disagree on its fields"
        ) from None


class ServedLogCollector:
    """Collects served records from the handler's stdout and hands each out once.

    `take(request_id)` returns the record whose correlation id is `request_id`. With
    `request_id` None it returns the oldest record not taken yet, which matches requests
    correctly only when they are sent one at a time.
    """

    def __init__(self) -> None:
        self._records: list[ServedRecord] = []
        self._taken: set[int] = set()
        self._next_in_order = 0
        self._condition = threading.Condition()
        self.other_lines = 0
        self.tail: list[str] = []  # last lines of the stream, shown when something fails

    def feed(self, line: str) -> None:
        record = parse_served_line(line)
        with self._condition:
            self.tail = [*self.tail[-19:], line.rstrip("\n")]
            if record is None:
                self.other_lines += 1
                return
            self._records.append(record)
            self._condition.notify_all()

    def follow(self, stream: IO[str]) -> threading.Thread:
        """Read `stream` line by line in a daemon thread until it closes."""

        def read() -> None:
            for line in stream:
                try:
                    self.feed(line)
                except BenchmarkError as error:
                    logger.error("%s", error)

        thread = threading.Thread(target=read, name="handler-log", daemon=True)
        thread.start()
        return thread

    def take(self, request_id: str | None, timeout_s: float = LOG_WAIT_TIMEOUT_S) -> ServedRecord:
        """Wait up to `timeout_s` for the record of `request_id`; raise BenchmarkError after."""
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while True:
                index = self._find(request_id)
                if index is not None:
                    self._taken.add(index)
                    return self._records[index]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    expected = f"correlation_id {request_id}" if request_id else "the next request"
                    raise BenchmarkError(
                        f"no {SERVED_MESSAGE!r} log line for {expected} within {timeout_s:.0f} s; "
                        "check that POWERTOOLS_LOG_LEVEL is INFO or lower"
                    )
                self._condition.wait(remaining)

    def _find(self, request_id: str | None) -> int | None:
        if request_id is not None:
            for index, record in enumerate(self._records):
                if index not in self._taken and record.correlation_id == request_id:
                    return index
            return None
        while self._next_in_order < len(self._records):
            index = self._next_in_order
            self._next_in_order += 1
            if index not in self._taken:
                return index
        return None


# --------------------------------------------------------------------------- ratings and users


@dataclass
class Ratings:
    """The interactions of the ratings file, as the loader reads them."""

    user_items: dict[str, set[str]]
    rows: int
    rejected: int

    @property
    def pairs(self) -> int:
        """Distinct (user_id, item_id) pairs: the number of items in the table after a load."""
        return sum(len(items) for items in self.user_items.values())

    @property
    def item_count(self) -> int:
        return len(set().union(*self.user_items.values())) if self.user_items else 0


def read_ratings(path: Path) -> Ratings:
    """Read every valid row of `path` with the loader's reader for its format."""
    try:
        file_format = detect_format(path)
    except (FormatError, OSError) as error:
        raise BenchmarkError(f"cannot read the ratings file {path}: {error}") from None
    user_items: dict[str, set[str]] = {}
    rows = rejected = 0
    with path.open("rb") as binary, open_text(binary) as text:
        for row in READERS[file_format](text):
            rows += 1
            if not isinstance(row, ParsedRow):
                rejected += 1
                continue
            interaction = row.interaction
            user_items.setdefault(interaction.user_id, set()).add(interaction.item_id)
    return Ratings(user_items=user_items, rows=rows, rejected=rejected)


def pick_users(
    user_ids: Iterable[str], count: int, warmup: int, seed: int
) -> tuple[list[str], list[str]]:
    """Return (measured users, warm-up users): distinct, drawn with `random.Random(seed)`."""
    ordered = sorted(user_ids)
    needed = count + warmup
    if needed > len(ordered):
        raise BenchmarkError(
            f"--users {count} plus --warmup {warmup} need {needed} users, but the ratings file "
            f"has {len(ordered)}; lower --users or --warmup"
        )
    chosen = random.Random(seed).sample(ordered, needed)
    return chosen[:count], chosen[count:]


def pick_naive_users(users: Sequence[str], count: int, seed: int) -> list[str]:
    """Return a seeded sample of `users`, in the order in which the naive run measures them."""
    return random.Random(f"naive-{seed}").sample(list(users), min(count, len(users)))


def check_recommendations(body: Any, seen: set[str], limit: int = LIMIT) -> list[str]:
    """Return the problems of one response body: wrong shape or size, repeats, seen items."""
    if not isinstance(body, dict) or not isinstance(body.get("recommendations"), list):
        return ["the body has no recommendations list"]
    item_ids = [
        entry.get("item_id") if isinstance(entry, dict) else None
        for entry in body["recommendations"]
    ]
    problems = []
    if len(item_ids) != limit:
        problems.append(f"{len(item_ids)} recommendations instead of {limit}")
    if len(set(item_ids)) != len(item_ids):
        problems.append("an item is recommended twice")
    problems.extend(
        f"item {item_id!r} is already in the user's ratings"
        for item_id in item_ids
        if item_id in seen
    )
    return problems


# --------------------------------------------------------------------------- processes


def stop_process(process: subprocess.Popen[Any], name: str) -> None:
    """Send SIGTERM, wait STOP_TIMEOUT_S, then SIGKILL. Safe on a process that has exited."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.warning("%s (pid %d) ignored SIGTERM; killing it", name, process.pid)
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
    logger.info("%s stopped (pid %d, exit code %s)", name, process.pid, process.returncode)


def server_environment(endpoint_url: str) -> dict[str, str]:
    """Build the local API's environment: the template's, pointed at dynalite, dummy credentials."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AWS_") and name != "PYTHONPATH"
    }
    env.update(function_settings(table_name=TABLE_NAME).environment)
    env.update(
        {
            "TABLE_NAME": TABLE_NAME,
            "AWS_ENDPOINT_URL_DYNAMODB": endpoint_url,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "INFO",
            # The collector must see each log line as soon as the handler writes it.
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


class LocalApiProcess:
    """`python -m tools.local_api` as a subprocess; its stdout feeds a ServedLogCollector."""

    def __init__(self, env: Mapping[str, str], collector: ServedLogCollector) -> None:
        self._env = dict(env)
        self._collector = collector
        self._process: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self.port = 0

    def start(self, attempts: int = 3) -> None:
        """Start on a free port and wait for a response; retry on another port if it exits."""
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            self._launch()
            try:
                self._wait_until_answering()
                return
            except BenchmarkError:
                exited = self._process is not None and self._process.poll() is not None
                self.stop()
                if not exited or attempt == attempts:
                    raise
                logger.warning("local API exited on port %d; retrying on another port", self.port)

    def _launch(self) -> None:
        # Closed in stop().
        self._stderr = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        command = [sys.executable, "-m", "tools.local_api", "--port", str(self.port)]
        self._process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        assert self._process.stdout is not None
        self._collector.follow(self._process.stdout)
        logger.info("Starting the local API on %s:%d (pid %d)", HOST, self.port, self._process.pid)

    def _wait_until_answering(self) -> None:
        started = time.monotonic()
        last_error: Exception | None = None
        while time.monotonic() - started < API_STARTUP_TIMEOUT_S:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise BenchmarkError(
                    f"the local API exited with code {code} while starting. Its stderr:\n"
                    f"{self.stderr_tail()}"
                )
            connection = http.client.HTTPConnection(HOST, self.port, timeout=5)
            try:
                # The route without a user id reaches the handler, which returns 400.
                connection.request("GET", "/recommendations")
                response = connection.getresponse()
                response.read()
                logger.info(
                    "The local API responds on %s:%d (HTTP %d, %.1f s)",
                    HOST,
                    self.port,
                    response.status,
                    time.monotonic() - started,
                )
                return
            except (OSError, http.client.HTTPException) as error:
                last_error = error
                time.sleep(0.2)
            finally:
                connection.close()
        raise BenchmarkError(
            f"the local API did not respond on {HOST}:{self.port} within "
            f"{API_STARTUP_TIMEOUT_S:.0f} s (last error: {last_error}). Its stderr:\n"
            f"{self.stderr_tail()}"
        )

    def stderr_tail(self, lines: int = 30) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return "\n".join(self._stderr.read().splitlines()[-lines:])

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, "local API")
            if process.stdout is not None:
                process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


# --------------------------------------------------------------------------- measurements


@dataclass
class RequestSample:
    """One measured GET /recommendations/{user_id}."""

    user_id: str
    status: int
    latency_ms: float
    request_id: str | None
    recommended: int
    problems: list[str] = field(default_factory=list)
    record: ServedRecord | None = None


class ApiClient:
    """Sends each GET on a new connection to the local API."""

    # NOTE: on a keep-alive connection every response of tools.local_api waited about 40 ms:
    # it writes the headers and the body in two sends without TCP_NODELAY, so Nagle's
    # algorithm delays the body until the client's delayed ACK. A new connection starts in
    # quick-ACK mode and does not wait. Go back to keep-alive once the front end sends
    # each response in one write or sets TCP_NODELAY.

    def __init__(self, port: int) -> None:
        self._port = port

    def get(self, target: str) -> tuple[int, str | None, bytes, float]:
        """Return (status, x-amzn-RequestId, body, latency in ms from connect to body read)."""
        connection = http.client.HTTPConnection(HOST, self._port, timeout=HTTP_TIMEOUT_S)
        try:
            started = time.perf_counter()
            connection.request("GET", target)
            response = connection.getresponse()
            body = response.read()
            latency_ms = (time.perf_counter() - started) * 1000
            return response.status, response.getheader(REQUEST_ID_HEADER), body, latency_ms
        finally:
            connection.close()


def request_recommendations(
    client: ApiClient, collector: ServedLogCollector, user_id: str, seen: set[str]
) -> RequestSample:
    """GET one user's recommendations, check them and attach the handler's log record."""
    target = f"/recommendations/{quote(user_id, safe='')}?limit={LIMIT}"
    status, request_id, raw_body, latency_ms = client.get(target)
    sample = RequestSample(user_id, status, latency_ms, request_id, recommended=0)
    if status != 200:
        sample.problems.append(f"HTTP {status}: {raw_body[:200]!r}")
        return sample
    try:
        body = json.loads(raw_body)
    except json.JSONDecodeError:
        sample.problems.append(f"the body is not JSON: {raw_body[:200]!r}")
        return sample
    sample.recommended = len(body.get("recommendations") or []) if isinstance(body, dict) else 0
    sample.problems.extend(check_recommendations(body, seen))
    sample.record = collector.take(request_id)
    return sample


def run_api_requests(
    port: int,
    collector: ServedLogCollector,
    users: Sequence[str],
    warmup_users: Sequence[str],
    ratings: Ratings,
) -> list[RequestSample]:
    """Send the warm-up requests, then one measured request per user, one at a time."""
    client = ApiClient(port)
    for user_id in warmup_users:
        request_recommendations(client, collector, user_id, ratings.user_items[user_id])
    logger.info("Sent %d warm-up requests", len(warmup_users))

    samples = []
    started = time.monotonic()
    for number, user_id in enumerate(users, start=1):
        sample = request_recommendations(client, collector, user_id, ratings.user_items[user_id])
        samples.append(sample)
        if sample.problems:
            logger.warning("User %s: %s", user_id, "; ".join(sample.problems))
        if number % 20 == 0 or number == len(users):
            logger.info(
                "%d of %d requests sent (%.1f s)", number, len(users), time.monotonic() - started
            )
    return samples


@dataclass
class NaiveSample:
    """One naive request, whole (`completed`) or stopped by the time budget."""

    user_id: str
    history_items: int
    completed: bool
    latency_ms: float
    query_calls: int
    scan_calls: int
    full_scans: int
    items_read: int
    consumed_capacity: float
    scan_seconds: list[float]
    recommended: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return self.query_calls + self.scan_calls


@dataclass
class NaiveRun:
    """The naive measurements: requests run, and users skipped because they would not fit."""

    samples: list[NaiveSample] = field(default_factory=list)
    # (user_id, history items, projected seconds) of each skipped user.
    skipped: list[tuple[str, int, float]] = field(default_factory=list)


def _naive_sample(
    user_id: str, history_items: int, completed: bool, latency_ms: float, stats: NaiveStats
) -> NaiveSample:
    return NaiveSample(
        user_id=user_id,
        history_items=history_items,
        completed=completed,
        latency_ms=latency_ms,
        query_calls=stats.query_calls,
        scan_calls=stats.scan_calls,
        full_scans=stats.full_scans,
        items_read=stats.items_read,
        consumed_capacity=stats.consumed_capacity,
        scan_seconds=stats.scan_seconds,
    )


def run_naive(client: Any, users: Sequence[str], ratings: Ratings, budget_s: float) -> NaiveRun:
    """Measure the naive recommender on `users`, in order, within `budget_s` seconds.

    Once one full Scan has been timed, a user whose projected time (history size times the
    median Scan time) exceeds the remaining budget is skipped rather than cut short, so the
    budget goes to requests that finish. A request that runs out of budget all the same is
    kept as incomplete and ends the run.
    """
    recommender = NaiveRecommender(client, TABLE_NAME)
    deadline = time.monotonic() + budget_s
    run = NaiveRun()
    scan_seconds: list[float] = []
    for user_id in users:
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            break
        history_items = len(ratings.user_items[user_id])
        if scan_seconds:
            projected_s = history_items * percentile(scan_seconds, 0.5)
            if projected_s > remaining_s:
                logger.info(
                    "Skipped naive user %s: %d Scans projected at %.0f s, %.0f s of budget left",
                    user_id,
                    history_items,
                    projected_s,
                    remaining_s,
                )
                run.skipped.append((user_id, history_items, projected_s))
                continue
        logger.info("Naive request for user %s: %d full-table Scans to go", user_id, history_items)

        started = time.perf_counter()
        try:
            result = recommender.recommend(user_id, LIMIT, deadline=deadline)
        except NaiveDeadlineError as error:
            latency_ms = (time.perf_counter() - started) * 1000
            run.samples.append(
                _naive_sample(user_id, error.scans_needed, False, latency_ms, error.stats)
            )
            logger.warning("%s", error)
            break

        sample = _naive_sample(user_id, result.history_items, True, result.elapsed_ms, result.stats)
        sample.recommended = len(result.recommendations)
        body = {"recommendations": [{"item_id": item} for item, _ in result.recommendations]}
        sample.problems = check_recommendations(body, ratings.user_items[user_id])
        run.samples.append(sample)
        scan_seconds.extend(result.stats.scan_seconds)
        logger.info(
            "Naive request for user %s: %.1f s, %d Scan and %d Query calls, %d items read",
            user_id,
            result.elapsed_ms / 1000,
            result.stats.scan_calls,
            result.stats.query_calls,
            result.stats.items_read,
        )
    return run


# --------------------------------------------------------------------------- summary


def _budgets(env: Mapping[str, str]) -> dict[str, int]:
    """Return the budgets that the handler reads from `env`, and the bounds they imply."""
    if str(SRC_DIR) not in sys.path:
        sys.path.insert(0, str(SRC_DIR))
    from config import load_settings

    budgets = load_settings(env).budgets
    return {
        **asdict(budgets),
        "max_items_read": budgets.max_items_read(),
        "max_query_calls_one_page_each": 1 + budgets.max_seed_items + budgets.max_neighbours,
    }


def _command_version(command: Sequence[str]) -> str:
    if shutil.which(command[0]) is None:
        return "not found"
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({error})"
    return completed.stdout.strip() or completed.stderr.strip()


def _proc_value(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        return None
    return None


def code_version() -> str:
    """Return the commit, marked if tracked files of src/, tools/ or the template changed."""
    commit = _command_version(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    status = _command_version(
        [
            "git",
            "-C",
            str(REPO_ROOT),
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            "src",
            "tools",
            "template.yaml",
        ]
    )
    return f"{commit} with uncommitted changes" if status else commit


def machine_info() -> dict[str, str]:
    """Describe the machine the figures were measured on."""
    try:
        dynalite_version = json.loads(DYNALITE_PACKAGE_JSON.read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError):
        dynalite_version = "unknown"
    memory_kb = _proc_value("/proc/meminfo", "MemTotal")
    memory = "unknown"
    if memory_kb and memory_kb.split()[0].isdigit():
        memory = f"{int(memory_kb.split()[0]) / 1024**2:.1f} GiB"
    return {
        "nproc": _command_version(["nproc"]),
        "cpu": _proc_value("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "node": _command_version(["node", "--version"]),
        "dynalite": dynalite_version,
    }


def _api_figures(samples: Sequence[RequestSample]) -> dict[str, Any]:
    records = [sample.record for sample in samples if sample.record is not None]
    return {
        "requests": len(samples),
        "latency_ms": summarize([sample.latency_ms for sample in samples]),
        # RecommendationService.recommend alone, as the handler's log line reports it.
        "recommend_ms": summarize([record.elapsed_ms for record in records]),
        "dynamodb_requests": summarize([record.query_calls for record in records]),
        "items_read": summarize([record.items_read for record in records]),
        "consumed_capacity": summarize([record.consumed_capacity for record in records]),
        "history_items": summarize([record.history_items for record in records]),
    }


def _naive_figures(samples: Sequence[NaiveSample]) -> dict[str, Any]:
    return {
        "requests": len(samples),
        "latency_ms": summarize([sample.latency_ms for sample in samples]),
        "recommend_ms": summarize([sample.latency_ms for sample in samples]),
        "dynamodb_requests": summarize([sample.requests for sample in samples]),
        "items_read": summarize([sample.items_read for sample in samples]),
        "consumed_capacity": summarize([sample.consumed_capacity for sample in samples]),
        "history_items": summarize([sample.history_items for sample in samples]),
    }


def build_summary(
    *,
    args: argparse.Namespace,
    command: str,
    ratings: Ratings,
    load_seconds: float,
    budgets: Mapping[str, int],
    api_samples: Sequence[RequestSample],
    naive_users: Sequence[str],
    naive_run: NaiveRun,
    started_at: datetime,
    runtime_s: float,
    load_average_before: float,
) -> dict[str, Any]:
    """Collect every figure of the run into one JSON-serializable dict."""
    naive_samples = naive_run.samples
    completed = [sample for sample in naive_samples if sample.completed]
    measured_ids = {sample.user_id for sample in completed}
    same_users = [sample for sample in api_samples if sample.user_id in measured_ids]
    ours_all = _api_figures(api_samples)
    ours_same = _api_figures(same_users)
    naive = _naive_figures(completed)
    scan_seconds = [seconds for sample in naive_samples for seconds in sample.scan_seconds]
    full_scans = sum(sample.full_scans for sample in naive_samples)
    scan_calls = sum(sample.scan_calls for sample in naive_samples)
    table_items = ratings.pairs

    def paired(metric: str, statistic: str) -> float | None:
        return ratio(naive[metric][statistic], ours_same[metric][statistic])

    return {
        "date": started_at.isoformat(timespec="seconds"),
        "command": command,
        "runtime_s": round(runtime_s, 1),
        "machine": machine_info(),
        "code": code_version(),
        # Work of other processes on the shared machine slows every figure.
        "load_average_before": load_average_before,
        "dataset": {
            "path": str(args.ratings),
            "rows": ratings.rows,
            "rejected": ratings.rejected,
            "table_items": table_items,
            "users": len(ratings.user_items),
            "items": ratings.item_count,
            "load_s": round(load_seconds, 1),
            "history_median": percentile(
                [len(items) for items in ratings.user_items.values()], 0.5
            ),
        },
        "budgets": dict(budgets),
        "settings": {"users": args.users, "seed": args.seed, "warmup": args.warmup, "limit": LIMIT},
        "ours": ours_all,
        "ours_on_naive_users": ours_same,
        "naive": {
            **naive,
            "sampled_users": list(naive_users),
            "measured_users": [sample.user_id for sample in completed],
            "incomplete": [
                {
                    "user_id": sample.user_id,
                    "history_items": sample.history_items,
                    "full_scans_done": sample.full_scans,
                    "seconds": round(sample.latency_ms / 1000, 1),
                }
                for sample in naive_samples
                if not sample.completed
            ],
            "skipped": [
                {"user_id": user_id, "history_items": history_items, "projected_s": round(seconds)}
                for user_id, history_items, seconds in naive_run.skipped
            ],
            "budget_s": args.naive_budget_seconds,
            "per_user": [
                {
                    "user_id": sample.user_id,
                    "history_items": sample.history_items,
                    "latency_ms": round(sample.latency_ms, 1),
                    "query_calls": sample.query_calls,
                    "scan_calls": sample.scan_calls,
                    "items_read": sample.items_read,
                    "formula_items_read": sample.history_items * (1 + table_items),
                    "consumed_capacity": round(sample.consumed_capacity, 1),
                }
                for sample in completed
            ],
            "full_scan_seconds": summarize(scan_seconds),
            "scan_pages_per_full_scan": (scan_calls / full_scans) if full_scans else None,
        },
        "ratios_naive_over_ours_same_users": {
            "latency_median": paired("latency_ms", "median"),
            "dynamodb_requests_mean": paired("dynamodb_requests", "mean"),
            "items_read_mean": paired("items_read", "mean"),
            "consumed_capacity_mean": paired("consumed_capacity", "mean"),
        },
        "checks": {
            "non_200": sum(1 for sample in api_samples if sample.status != 200),
            # Responses that are 200 but fail check_recommendations, with their problems.
            "failed_responses": [
                {
                    "user_id": sample.user_id,
                    "ratings": len(ratings.user_items[sample.user_id]),
                    "problems": sample.problems,
                }
                for sample in api_samples
                if sample.status == 200 and sample.problems
            ],
            "naive_violations": sum(len(sample.problems) for sample in completed),
            "unmatched_log_lines": sum(
                1 for sample in api_samples if sample.status == 200 and sample.record is None
            ),
        },
    }


# --------------------------------------------------------------------------- report


def _number(value: float | None, decimals: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{decimals}f}"


def _times(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}x" if value >= 100 else f"{value:,.1f}x"


# (label, metric, statistic, decimals, ratio key or None) of each row of the main table.
FIGURE_ROWS = (
    ("latency median (ms)", "latency_ms", "median", 1, "latency_median"),
    ("latency p95 (ms)", "latency_ms", "p95", 1, None),
    ("latency max (ms)", "latency_ms", "max", 1, None),
    ("time inside recommend(), median (ms)", "recommend_ms", "median", 1, None),
    ("DynamoDB requests, mean", "dynamodb_requests", "mean", 1, "dynamodb_requests_mean"),
    ("DynamoDB requests, median", "dynamodb_requests", "median", 1, None),
    ("items read, mean", "items_read", "mean", 0, "items_read_mean"),
    ("items read, median", "items_read", "median", 0, None),
    ("consumed capacity (RCU), mean", "consumed_capacity", "mean", 1, "consumed_capacity_mean"),
    ("consumed capacity (RCU), median", "consumed_capacity", "median", 1, None),
    ("user history (items), median", "history_items", "median", 0, None),
)


def _figure_rows(
    columns: Sequence[Mapping[str, Any]], ratios: Mapping[str, float | None]
) -> list[str]:
    lines = []
    for label, metric, statistic, decimals, ratio_key in FIGURE_ROWS:
        cells = [_number(column[metric][statistic], decimals) for column in columns]
        cells.append(_times(ratios[ratio_key]) if ratio_key else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def render_section(summary: Mapping[str, Any]) -> str:
    """Render the Markdown section of docs/benchmarks.md, markers included."""
    ours = summary["ours"]
    same = summary["ours_on_naive_users"]
    naive = summary["naive"]
    ratios = summary["ratios_naive_over_ours_same_users"]
    dataset = summary["dataset"]
    machine = summary["machine"]
    budgets = summary["budgets"]
    checks = summary["checks"]
    measured = len(naive["measured_users"])
    table_items = dataset["table_items"]

    lines = [
        SECTION_START,
        "## Request benchmark: budgeted Queries against the naive full scan",
        "",
        "Written by `tools/bench_requests.py`; rerun the command below to refresh this section.",
        "",
        f"- Date: {summary['date']}; benchmark runtime {summary['runtime_s']:,.0f} s.",
        f"- Command: `{summary['command']}`, on commit {summary['code']}.",
        (
            f"- Machine: {machine['nproc']} cores (`nproc`), {machine['cpu']}, "
            f"{machine['memory']}, "
            f"{machine['os']}; Python {machine['python']}, Node.js {machine['node']}, "
            f"dynalite {machine['dynalite']} in memory. Load average over the minute before "
            f"the start: {summary['load_average_before']:.2f}."
        ),
        (
            f"- Dataset: `{Path(dataset['path']).name}`, {dataset['rows']:,} rows, "
            f"{table_items:,} table items, {dataset['users']:,} users, {dataset['items']:,} items; "
            f"median history {dataset['history_median']:,.0f} items. "
            f"Load time {dataset['load_s']} s."
        ),
        (
            f"- Requests: {ours['requests']} users drawn with seed {summary['settings']['seed']}, "
            f"sent one at a time over HTTP after {summary['settings']['warmup']} warm-up requests, "
            f"`limit={summary['settings']['limit']}`. Checks: "
            f"{_count(checks['non_200'], 'non-200 response')}, "
            f"{_count(len(checks['failed_responses']), 'response')} with a wrong count, a "
            "repeat or an already rated item, "
            f"{_count(checks['unmatched_log_lines'], 'request')} without a log line."
        ),
    ]
    lines += _failed_response_notes(checks["failed_responses"], budgets["max_history_items"])
    lines.append(
        f"- Naive sample: {measured} of {len(naive['sampled_users'])} sampled users measured "
        f"within the {naive['budget_s']:,.0f} s budget (users: "
        f"{', '.join(naive['measured_users']) or 'none'}); "
        f"{_count(checks['naive_violations'], 'check failure')} in their results."
    )
    for skipped in naive["skipped"]:
        lines.append(
            f"  User {skipped['user_id']} ({skipped['history_items']:,} history items) was "
            f"skipped: its projected {skipped['projected_s']:,} s did not fit in the budget left."
        )
    for incomplete in naive["incomplete"]:
        lines.append(
            f"  User {incomplete['user_id']} was stopped by the budget after "
            f"{incomplete['full_scans_done']} of {incomplete['history_items']} full Scans "
            f"({incomplete['seconds']:,.0f} s) and is left out of the figures."
        )
    lines += [
        "- Budgets in force (`config.Budgets`): "
        + ", ".join(
            f"`{name}` {budgets[name]:,}"
            for name in (
                "max_history_items",
                "max_seed_items",
                "max_users_per_item",
                "max_neighbours",
                "max_items_per_neighbour",
            )
        )
        + f"; so at most {budgets['max_items_read']:,} items read per request.",
        "",
        (
            f"| per request | ours, {ours['requests']} users | ours, the {measured} naive users "
            f"| naive, {measured} users | naive / ours (same users) |"
        ),
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += _figure_rows([ours, same, naive], ratios)
    lines += [
        "",
        (
            f"p95 is shown for at least {MIN_SAMPLES_FOR_P95} requests only. The latency of ours "
            "is the client-side time of one HTTP request to the local front end, on a new "
            "connection each time, and the time inside recommend() is what the handler logs. The "
            "naive time is one call of `tools.naive_recommender` in the benchmark process, with no "
            "HTTP in front. "
            "DynamoDB requests are Query calls (pages) for ours and Query plus Scan calls for the "
            "naive approach. Consumed capacity is as dynalite reports it for eventually "
            "consistent reads."
        ),
        "",
    ]
    lines += _naive_user_table(naive, table_items)
    lines += _reading_notes(summary)
    lines.append(SECTION_END)
    return "\n".join(lines) + "\n"


def _failed_response_notes(
    failed: Sequence[Mapping[str, Any]], max_history_items: int
) -> list[str]:
    lines = [
        f"  User {response['user_id']} ({response['ratings']:,} ratings): "
        + "; ".join(response["problems"])
        + "."
        for response in failed
    ]
    if failed and all(response["ratings"] > max_history_items for response in failed):
        subject = "This user has" if len(failed) == 1 else "Each of these users has"
        lines.append(
            f"  {subject} more than `max_history_items` ({max_history_items:,}) ratings. The "
            "request path excludes only the items of the history it reads, the newest "
            "`max_history_items`, so an older rating can come back as a recommendation."
        )
    return lines


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" if number == 1 else f"{number:,} {noun}s"


def _naive_user_table(naive: Mapping[str, Any], table_items: int) -> list[str]:
    lines = [
        "Naive requests, one row per measured user:",
        "",
        (
            "| user | history | time (s) | Query calls | Scan calls | items read "
            "| history x (1 + table items) | RCU |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in naive["per_user"]:
        lines.append(
            f"| {row['user_id']} | {row['history_items']:,} | {row['latency_ms'] / 1000:,.1f} "
            f"| {row['query_calls']:,} | {row['scan_calls']:,} | {row['items_read']:,} "
            f"| {row['formula_items_read']:,} | {row['consumed_capacity']:,.1f} |"
        )
    scan_seconds = naive["full_scan_seconds"]
    pages = naive["scan_pages_per_full_scan"]
    over_limit = sum(
        1 for row in naive["per_user"] if row["latency_ms"] > API_GATEWAY_TIMEOUT_S * 1000
    )
    items_per_page = table_items / pages if pages else None
    lines += [
        "",
        (
            f"One full Scan of the {table_items:,} items took "
            f"{_number(scan_seconds['median'], 2)} s "
            f"(median of {scan_seconds['count']}) in {_number(pages, 1)} pages of at most 1 MB, "
            f"{_number(items_per_page)} items per page. "
            f"{over_limit} of {len(naive['per_user'])} naive requests took longer than the "
            f"{API_GATEWAY_TIMEOUT_S} s that API Gateway waits for a Lambda integration by default."
        ),
        "",
    ]
    return lines


def _reading_notes(summary: Mapping[str, Any]) -> list[str]:
    budgets = summary["budgets"]
    dataset = summary["dataset"]
    table_items = dataset["table_items"]
    median_history = dataset["history_median"]
    return [
        "### How to read this",
        "",
        (
            f"dynalite runs in Node.js on the same {summary['machine']['nproc']} cores as the "
            "client and the handler, and every call crosses the loopback interface. These "
            "latencies are therefore not DynamoDB latencies on AWS, where each call costs a few "
            "milliseconds of network and service time and Lambda adds its own overhead. What "
            "carries over is the work per request: "
            "the number of DynamoDB requests and of items read, and the capacity they consume. "
            "Both approaches ran in one run against the same table. Request counts understate "
            "the gap, because a naive Scan page carries up to 1 MB of items while a Query of "
            "ours returns at most its budget of index entries, so items read and capacity show "
            "the difference."
        ),
        "",
        "### Cost per request",
        "",
        (
            "With the budgets above, one request reads at most "
            f"`max_history_items + max_seed_items * max_users_per_item + max_neighbours * "
            f"max_items_per_neighbour` = {budgets['max_history_items']:,} + "
            f"{budgets['max_seed_items']:,} x {budgets['max_users_per_item']:,} + "
            f"{budgets['max_neighbours']:,} x {budgets['max_items_per_neighbour']:,} = "
            f"{budgets['max_items_read']:,} index entries (`Budgets.max_items_read()`), in "
            f"{budgets['max_query_calls_one_page_each']:,} Query calls plus one per extra page, "
            "whatever the size of the table."
        ),
        "",
        (
            "The naive approach reads the user's history H, then the whole table T once per item "
            "of H: `items read = |H| + |H| x |T|`, in `pages(H) + |H| x pages(T)` calls, where a "
            "page holds at most 1 MB. Its cost grows with both the user's history and the table: "
            f"here, with |T| = {table_items:,}, a user with the median history of "
            f"{median_history:,.0f} items costs {median_history * (1 + table_items):,.0f} items "
            "read, and the count grows in proportion to the table."
        ),
        "",
    ]


def replace_section(page: str, section: str) -> str:
    """Put `section` between the markers of `page`, or append it; keep the rest of the page."""
    start = page.find(SECTION_START)
    end = page.find(SECTION_END)
    if start == -1 and end == -1:
        base = page if page.strip() else PAGE_HEADER
        return base.rstrip("\n") + "\n\n" + section
    if start == -1 or end == -1 or end < start:
        raise BenchmarkError(
            f"the page has an unmatched {SECTION_START if start != -1 else SECTION_END} marker; "
            "fix or remove the markers by hand, then rerun"
        )
    after = page[end + len(SECTION_END) :].lstrip("\n")
    return page[:start] + section + ("\n" + after if after else "")


def write_report(output: Path, summary: Mapping[str, Any]) -> None:
    page = output.read_text(encoding="utf-8") if output.exists() else ""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(replace_section(page, render_section(summary)), encoding="utf-8")
    logger.info("Wrote the benchmark section of %s", output)


# --------------------------------------------------------------------------- command line


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {number}")
    return number


def _non_negative_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer of 0 or more, got {value!r}"
        ) from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected an integer of 0 or more, got {number}")
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not number > 0 or math.isinf(number):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {value!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench_requests",
        description="Benchmark GET /recommendations/{user_id} on a local stack against the "
        "naive full-scan recommender, and record the figures in a Markdown page.",
    )
    parser.add_argument(
        "--ratings",
        type=Path,
        default=DEFAULT_RATINGS,
        help="interactions file to load, in any format the loader reads (default: %(default)s)",
    )
    parser.add_argument(
        "--users",
        type=_positive_int,
        default=100,
        help="measured requests, one per user (default: 100)",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the user samples (default: 7)")
    parser.add_argument(
        "--warmup", type=_non_negative_int, default=3, help="uncounted requests first (default: 3)"
    )
    parser.add_argument(
        "--naive-users",
        type=_non_negative_int,
        default=5,
        help="users to measure with the naive recommender, 0 to skip it (default: 5)",
    )
    parser.add_argument(
        "--naive-budget-seconds",
        type=_positive_float,
        default=600.0,
        help="stop the naive measurements after this many seconds (default: 600)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="Markdown page whose bench_requests section is rewritten (default: %(default)s)",
    )
    return parser


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Run the whole benchmark and return its summary; every started process is stopped."""
    started_at = datetime.now(UTC)
    started = time.monotonic()
    load_average_before = os.getloadavg()[0]
    ratings_path: Path = args.ratings
    if not ratings_path.is_file():
        raise BenchmarkError(f"ratings file {ratings_path} not found; pass --ratings PATH")
    ratings = read_ratings(ratings_path)
    users, warmup_users = pick_users(ratings.user_items, args.users, args.warmup, args.seed)
    naive_users = pick_naive_users(users, args.naive_users, args.seed)
    logger.info(
        "Read %s: %d rows, %d users; measuring %d users, the naive approach on up to %d",
        ratings_path,
        ratings.rows,
        len(ratings.user_items),
        len(users),
        len(naive_users),
    )

    with ExitStack() as stack:
        dynalite = stack.enter_context(Dynalite(port=0))
        client = dynalite.client()
        create_table(client, TABLE_NAME)
        load_started = time.monotonic()
        report = load_file(ratings_path, TABLE_NAME, client=client, progress=False)
        load_seconds = time.monotonic() - load_started
        if report.rows_written != ratings.pairs:
            logger.warning(
                "The loader wrote %d rows but the file has %d distinct (user, item) pairs",
                report.rows_written,
                ratings.pairs,
            )

        env = server_environment(dynalite.endpoint_url)
        budgets = _budgets(env)
        collector = ServedLogCollector()
        api = LocalApiProcess(env, collector)
        stack.callback(api.stop)
        api.start()

        api_samples = run_api_requests(api.port, collector, users, warmup_users, ratings)
        api.stop()  # idle from here on; stopping it early frees a core for the naive run

        naive_run = run_naive(client, naive_users, ratings, args.naive_budget_seconds)

    return build_summary(
        args=args,
        command=command,
        ratings=ratings,
        load_seconds=load_seconds,
        budgets=budgets,
        api_samples=api_samples,
        naive_users=naive_users,
        naive_run=naive_run,
        started_at=started_at,
        runtime_s=time.monotonic() - started,
        load_average_before=load_average_before,
    )


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    # Later signals are ignored, so that a second Ctrl-C or a process-group SIGTERM (which
    # `timeout` sends after the direct one) cannot cut short the cleanup of the first.
    for handled in HANDLED_SIGNALS:
        signal.signal(handled, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise _Terminated(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark command line; return 0, 1 on a failure or failed check, 130 if stopped."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    configure_logging()
    command = shlex.join([".venv/bin/python", "-m", "tools.bench_requests", *arguments])
    previous_handlers = {
        handled: signal.signal(handled, _stop_on_signal) for handled in HANDLED_SIGNALS
    }
    try:
        summary = run(args, command)
    except (BenchmarkError, DynaliteError, LoaderError, TemplateError) as error:
        logger.error("Benchmark failed: %s", error)
        return EXIT_FAILED
    except (KeyboardInterrupt, _Terminated):
        logger.error("Interrupted; every process this benchmark started has been stopped")
        return EXIT_INTERRUPTED
    finally:
        for handled, previous in previous_handlers.items():
            signal.signal(handled, previous)

    write_report(args.output, summary)
    print(json.dumps(summary, sort_keys=True))
    checks = summary["checks"]
    failed = checks["non_200"] + len(checks["failed_responses"]) + checks["naive_violations"]
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
