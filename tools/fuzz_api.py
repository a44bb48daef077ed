"""Fuzz the HTTP API against docs/openapi.yaml with schemathesis, on a local stack.

    python -m tools.fuzz_api [--max-examples 1200] [--seed 1] [--modes positive,negative]
                             [--json FILE] [--verbose]

The command starts an in-memory dynalite on 127.0.0.1, creates the table from template.yaml,
loads SAMPLE_INTERACTIONS through tools.loader, imports src/app.py and serves it with
tools/local_api.py on a free 127.0.0.1 port. For every operation of the OpenAPI document and
every generation mode it then sends up to --max-examples generated requests and runs the
checks of `checks_for` on each response. It prints the number of generated and sent cases
and the status codes seen. Every distinct failure follows, with a curl command that
reproduces it. The exit status is 1 if any check failed or any handler call raised (a 502 of
the front end), else 0.

tests/contract/test_schemathesis.py runs the same checks with fewer cases in the test suite,
and imports the sample log, the URL quota and the checks from here.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

import hypothesis
import requests
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode, Response
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.openapi import from_path
from schemathesis.schemas import APIOperation, BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tools.dynalite import Dynalite, DynaliteError
from tools.loader import LoaderError, LoadReport, load_file
from tools.local_api import LocalApiServer, default_handler, serve_in_thread
from tools.template_table import create_model_table, create_table, function_settings

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
OPENAPI_PATH = REPO_ROOT / "docs" / "openapi.yaml"
FUZZ_TABLE_NAME = "FuzzInteractions"
FUZZ_MODEL_TABLE_NAME = "FuzzModels"

USER_ROUTE = "/recommendations/{user_id}"
USER_PATH_PREFIX = "/recommendations/"

# API Gateway quota "Length, in characters, of the URL for a regional API" (Amazon API
# Gateway developer guide, "Quotas for configuring and running a REST API"). A longer URL
# never reaches the function, so generated requests beyond it are skipped, not sent.
MAX_URL_CHARACTERS = 10_240

# The contract in docs/openapi.yaml, in UTF-8 bytes and counts.
MAX_USER_ID_BYTES = 2048
MAX_ITEM_ID_BYTES = 1024
MAX_EXCLUDED_ITEMS = 100
DEFAULT_LIMIT = 10

DEFAULT_MAX_EXAMPLES = 1200
DEFAULT_SEED = 1
FAILURES_SHOWN = 10

# (user_id, item_id, interaction_type, timestamp). The ids match the examples of
# docs/openapi.yaml, so that schemathesis' example phase requests users with history.
# alice@example.com has seen B01N5IB20Q and B0792KTHKJ; bob and carol share those with
# B07PGL2ZSL, and dave and "42" link them to B00X4WHP5E. The last users have ids that need
# percent-encoding or UTF-8 in a URL.
SAMPLE_INTERACTIONS: tuple[tuple[str, str, str, int], ...] = (
    ("alice@example.com", "B01N5IB20Q", "purchase", 1_700_000_010),
    ("alice@example.com", "B0792KTHKJ", "view", 1_700_000_020),
    ("bob", "B01N5IB20Q", "view", 1_700_000_030),
    ("bob", "B0792KTHKJ", "view", 1_700_000_040),
    ("bob", "B07PGL2ZSL", "purchase", 1_700_000_050),
    ("carol", "B01N5IB20Q", "view", 1_700_000_060),
    ("carol", "B07PGL2ZSL", "view", 1_700_000_070),
    ("dave", "B0792KTHKJ", "view", 1_700_000_080),
    ("dave", "B00X4WHP5E", "add_to_cart", 1_700_000_090),
    ("42", "B01N5IB20Q", "view", 1_700_000_100),
    ("42", "B00X4WHP5E", "view", 1_700_000_110),
    ("erin", "B09LONELY1", "view", 1_700_000_120),
    ("josé", "B01N5IB20Q", "view", 1_700_000_130),
    ("josé", "B0792KTHKJ", "view", 1_700_000_140),
    ("50%41", "B01N5IB20Q", "view", 1_700_000_150),
    ("a/b c", "B0792KTHKJ", "view", 1_700_000_160),
)


class FuzzSetupError(RuntimeError):
    """The local stack for fuzzing could not be started; the message names what to fix."""


# --------------------------------------------------------------------------- sample data


def write_sample_log(directory: Path) -> Path:
    """Write SAMPLE_INTERACTIONS as a loader CSV file in `directory` and return its path."""
    path = directory / "fuzz-sample.csv"
    with path.open("w", encoding="utf-8", newline="") as output:
        writer = csv.writer(output)
        writer.writerow(["user_id", "item_id", "interaction_type", "timestamp"])
        writer.writerows(SAMPLE_INTERACTIONS)
    return path


def load_sample_log(client: Any, table_name: str, directory: Path) -> LoadReport:
    """Load SAMPLE_INTERACTIONS into `table_name` with tools.loader and return its report."""
    path = write_sample_log(directory)
    report = load_file(path, table_name, client=client, file_format="csv", progress=False)
    if report.rows_written != len(SAMPLE_INTERACTIONS):
        raise FuzzSetupError(
            f"the sample log wrote {report.rows_written} of {len(SAMPLE_INTERACTIONS)} rows"
            f" (rejections: {report.rejections}); fix SAMPLE_INTERACTIONS"
        )
    return report


def sample_history(user_id: str) -> set[str]:
    """Return the items of `user_id` in SAMPLE_INTERACTIONS."""
    return {item for user, item, _, _ in SAMPLE_INTERACTIONS if user == user_id}


# --------------------------------------------------------------------------- checks


def load_schema(path: Path = OPENAPI_PATH) -> BaseSchema:
    """Load the OpenAPI document as a schemathesis schema."""
    return from_path(path)


def fits_url_quota(case: Case, base_url: str) -> bool:
    """Return whether the request of `case` has at most MAX_URL_CHARACTERS of path and query."""
    # The path and query as requests (schemathesis' transport) sends them, so the count
    # includes the percent-encoding.
    arguments = case.as_transport_kwargs(base_url=base_url)
    prepared = requests.Request(
        method=arguments["method"], url=arguments["url"], params=arguments.get("params")
    ).prepare()
    return len(prepared.path_url) <= MAX_URL_CHARACTERS


def _sent_query(response: Response) -> list[tuple[str, str]]:
    # The query as the server received it, decoded like API Gateway decodes it.
    query = urlsplit(response.request.url or "").query
    return parse_qsl(query, keep_blank_values=True, encoding="utf-8", errors="replace")


def _sent_user_id(response: Response) -> bytes | None:
    # The user id segment as sent, percent-decoded once to bytes; None if the path has none.
    path = urlsplit(response.request.url or "").path
    if not path.startswith(USER_PATH_PREFIX):
        return None
    return unquote_to_bytes(path[len(USER_PATH_PREFIX) :])


def _first_byte_limit_violation(response: Response) -> str | None:
    """Return the field whose UTF-8 byte limit the sent request exceeds, or None."""
    user_id = _sent_user_id(response)
    if user_id is not None:
        try:
            user_id.decode("utf-8")
        except UnicodeDecodeError:
            return "user_id"
        if len(user_id) > MAX_USER_ID_BYTES:
            return "user_id"
    for name, value in _sent_query(response):
        if name == "exclude" and len(value.encode("utf-8")) > MAX_ITEM_ID_BYTES:
            return "exclude"
    return None


def byte_limits_enforced(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Check a schema-valid request: 200 within the byte limits, else 400 naming the field.

    OpenAPI states lengths in characters only, so schemathesis counts a 2048-character
    user id of multi-byte characters as valid while the contract rejects it.
    """
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    if case.operation.path != USER_ROUTE:
        return None
    field_at_fault = _first_byte_limit_violation(response)
    if field_at_fault is None:
        assert response.status_code == 200, (
            f"a request within every limit got {response.status_code}, expected 200:"
            f" {response.text[:300]}"
        )
        return None
    assert response.status_code == 400, (
        f"{field_at_fault} is over its UTF-8 byte limit, expected 400, got {response.status_code}"
    )
    assert response.json().get("field") == field_at_fault, (
        f"the 400 names {response.json().get('field')!r}, expected {field_at_fault!r}"
    )
    return None


def recommendations_match_request(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Check a 200 body against its request: limit, exclusions, ranking and `because`."""
    if response.status_code != 200 or case.operation.path != USER_ROUTE:
        return None
    body = response.json()
    query = _sent_query(response)
    limits = [value for name, value in query if name == "limit"]
    limit = int(limits[0].strip()) if limits else DEFAULT_LIMIT
    excluded = {value for name, value in query if name == "exclude"}
    explain_values = [value.lower() for name, value in query if name == "explain"]
    explain = explain_values == ["true"]
    recommendations = body["recommendations"]
    item_ids = [entry["item_id"] for entry in recommendations]

    assert len(recommendations) <= limit, f"{len(recommendations)} items for limit={limit}"
    assert not excluded.intersection(item_ids), (
        f"excluded items returned: {excluded & set(item_ids)}"
    )
    assert len(set(item_ids)) == len(item_ids), f"an item is listed twice: {item_ids}"
    # Scores are rounded to 6 decimal places in the body, so two items that show the same
    # score may have differed before rounding: only the order of the scores is checked.
    scores = [entry["score"] for entry in recommendations]
    assert scores == sorted(scores, reverse=True), f"not ranked best first: {recommendations}"
    with_because = [entry for entry in recommendations if "because" in entry]
    if explain and body.get("source") != "popular":
        # A popular list (user without history) has no history item to point to.
        assert len(with_because) == len(recommendations), "explain=true, but `because` is missing"
    else:
        assert not with_because, "`because` is present without explain=true"
    history = sample_history(body["user_id"])
    assert not history.intersection(item_ids), f"items of the user's history returned: {item_ids}"
    return None


# Response checks for every case: no 5xx, documented status codes, content type, headers
# and body schema, and the request-specific invariants above.
RESPONSE_CHECKS: tuple[Callable[..., bool | None], ...] = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    recommendations_match_request,
)


def checks_for(mode: GenerationMode) -> list[Callable[..., bool | None]]:
    """Return the checks for cases of `mode`: negative cases must also be rejected with 4xx."""
    extra = [byte_limits_enforced] if mode.is_positive else [negative_data_rejection]
    return [*RESPONSE_CHECKS, *extra]


# --------------------------------------------------------------------------- campaign


@dataclass
class CaseFailure:
    """One failed case: the titles of its failed checks and a curl command that repeats it."""

    titles: tuple[str, ...]
    message: str
    curl: str


@dataclass
class OperationRun:
    """Counts of one operation in one generation mode."""

    operation: str
    mode: str
    generated: int = 0
    sent: int = 0
    skipped_over_url_quota: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[CaseFailure] = field(default_factory=list)
    elapsed_s: float = 0.0
    # True when Hypothesis could not generate a single case to send, as in negative mode
    # for an operation without parameters.
    unsatisfiable: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "mode": self.mode,
            "generated": self.generated,
            "sent": self.sent,
            "skipped_over_url_quota": self.skipped_over_url_quota,
            "statuses": {str(code): count for code, count in sorted(self.statuses.items())},
            "failures": [
                {"titles": list(failure.titles), "message": failure.message, "curl": failure.curl}
                for failure in self.failures
            ],
            "elapsed_s": round(self.elapsed_s, 1),
            "unsatisfiable": self.unsatisfiable,
        }


def _failure_titles(error: Failure | FailureGroup) -> tuple[str, ...]:
    failures = error.exceptions if isinstance(error, FailureGroup) else (error,)
    return tuple(sorted({failure.title for failure in failures}))


def run_operation(
    operation: APIOperation,
    mode: GenerationMode,
    base_url: str,
    *,
    max_examples: int,
    seed: int,
) -> OperationRun:
    """Send up to `max_examples` generated cases of `operation` and check every response.

    Failures are collected rather than raised, so one run counts all of them. Hypothesis
    stops early when the operation has fewer distinct cases than `max_examples`.
    """
    run = OperationRun(operation=operation.label, mode=mode.value)
    checks = checks_for(mode)
    started = time.monotonic()

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def exercise(case: Case) -> None:
        run.generated += 1
        if not fits_url_quota(case, base_url):
            run.skipped_over_url_quota += 1
            assume(False)
        response = case.call(base_url=base_url)
        run.sent += 1
        run.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=checks)
        except (Failure, FailureGroup) as error:
            run.failures.append(
                CaseFailure(
                    titles=_failure_titles(error),
                    message=str(error)[:2000],
                    curl=case.as_curl_command(base_url=base_url),
                )
            )

    try:
        hypothesis.seed(seed)(exercise)()
    except Unsatisfiable:
        run.unsatisfiable = True
        logger.info("%s (%s): no case could be generated", run.operation, run.mode)
    run.elapsed_s = time.monotonic() - started
    logger.info(
        "%s (%s): %d generated, %d sent, %d failed in %.1f s",
        run.operation,
        run.mode,
        run.generated,
        run.sent,
        len(run.failures),
        run.elapsed_s,
    )
    return run


def run_campaign(
    schema: BaseSchema,
    base_url: str,
    *,
    max_examples: int,
    seed: int,
    modes: Sequence[GenerationMode] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
) -> list[OperationRun]:
    """Run `run_operation` for every operation of `schema` in every mode of `modes`."""
    runs = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in modes:
            runs.append(
                run_operation(operation, mode, base_url, max_examples=max_examples, seed=seed)
            )
    return runs


# --------------------------------------------------------------------------- local stack


def _point_process_at_local_endpoint(endpoint_url: str) -> None:
    # The handler builds its boto3 client from the environment. Dummy credentials and no
    # profile keep every call of this process on the local server, never on an AWS account.
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_DYNAMODB": endpoint_url,
        }
    )


@contextmanager
def local_stack(*, handler_log_level: str = "WARNING") -> Iterator[tuple[LocalApiServer, str]]:
    """Start dynalite, load the sample log and serve src/app.py; yield (server, base URL).

    Everything listens on 127.0.0.1 and stops when the block exits. The handler logs at
    `handler_log_level`.
    """
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fuzz-api-") as scratch, Dynalite(port=0) as dynalite:
        client = dynalite.client()
        create_table(client, FUZZ_TABLE_NAME)
        report = load_sample_log(client, FUZZ_TABLE_NAME, Path(scratch))
        logger.info(
            "Loaded %d sample interactions into %s at %s",
            report.rows_written,
            FUZZ_TABLE_NAME,
            dynalite.endpoint_url,
        )

        # Every route gets data: the similar-items route reads the built model.
        if str(REPO_ROOT / "src") not in sys.path:
            sys.path.insert(0, str(REPO_ROOT / "src"))
        from model_builder import BuilderSettings, build_model

        create_model_table(client, FUZZ_MODEL_TABLE_NAME)
        build_model(
            client,
            BuilderSettings(
                table_name=FUZZ_TABLE_NAME, model_table_name=FUZZ_MODEL_TABLE_NAME, scan_segments=1
            ),
        )

        _point_process_at_local_endpoint(dynalite.endpoint_url)
        os.environ.update(function_settings(table_name=FUZZ_TABLE_NAME).environment)
        os.environ["MODEL_TABLE_NAME"] = FUZZ_MODEL_TABLE_NAME
        os.environ["POWERTOOLS_LOG_LEVEL"] = handler_log_level
        server, base_url = serve_in_thread(0, handler=default_handler())
        logger.info("Local stack ready at %s in %.1f s", base_url, time.monotonic() - started)
        try:
            yield server, base_url
        finally:
            server.stop()


# --------------------------------------------------------------------------- command line


def format_summary(runs: Sequence[OperationRun], handler_failures: int) -> str:
    """Return the human-readable summary: counts per operation and mode, then the failures."""
    lines = [f"{'operation':<34} {'mode':<9} {'generated':>9} {'sent':>6} {'failed':>6}  statuses"]
    for run in runs:
        statuses = ", ".join(f"{code}: {count}" for code, count in sorted(run.statuses.items()))
        if run.unsatisfiable and run.sent == 0:
            statuses = "none sent: no case of this mode exists"
        lines.append(
            f"{run.operation:<34} {run.mode:<9} {run.generated:>9} {run.sent:>6}"
            f" {len(run.failures):>6}  {statuses or '-'}"
        )
    generated = sum(run.generated for run in runs)
    sent = sum(run.sent for run in runs)
    failures = [failure for run in runs for failure in run.failures]
    server_errors = sum(
        count for run in runs for code, count in run.statuses.items() if code >= 500
    )
    lines.append(
        f"Total: {generated} cases generated, {sent} sent, {len(failures)} failed,"
        f" {server_errors} responses with status 5xx, {handler_failures} handler failures"
        " (502 of the front end)"
    )

    distinct: dict[tuple[str, ...], CaseFailure] = {}
    for failure in failures:
        distinct.setdefault(failure.titles, failure)
    for titles, failure in list(distinct.items())[:FAILURES_SHOWN]:
        lines.append(
            f"\nFailure: {'; '.join(titles)}\n{failure.message}\nReproduce: {failure.curl}"
        )
    return "\n".join(lines)


def _parse_modes(text: str) -> list[GenerationMode]:
    try:
        return [GenerationMode(name.strip()) for name in text.split(",") if name.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid --modes {text!r}: use positive, negative or positive,negative"
        ) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Build the command-line parser of `python -m tools.fuzz_api`."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.fuzz_api",
        description="Fuzz the API of docs/openapi.yaml with schemathesis on a local stack"
        " (dynalite and the local front end, both on 127.0.0.1).",
    )
    parser.add_argument(
        "--max-examples",
        type=_positive_int,
        default=DEFAULT_MAX_EXAMPLES,
        help="largest number of generated cases per operation and mode (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help="Hypothesis seed; the same seed generates the same cases (default: %(default)s)",
    )
    parser.add_argument(
        "--modes",
        type=_parse_modes,
        default=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        help="comma-separated generation modes: positive, negative (default: both)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the summary as JSON to FILE")
    parser.add_argument(
        "--verbose", action="store_true", help="log progress, and the handler's INFO logs"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the campaign; return 0 when no check failed and no handler call raised, else 1."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    started = time.monotonic()
    try:
        schema = load_schema()
        with ExitStack() as stack:
            if not args.verbose:
                # The handler prints JSON logs and metrics (CloudWatch EMF) to stdout, thousands
                # of lines per campaign, which would bury the summary.
                devnull = stack.enter_context(open(os.devnull, "w", encoding="utf-8"))
                stack.enter_context(redirect_stdout(devnull))
                warnings.filterwarnings("ignore", message="No application metrics to publish")
            handler_log_level = "INFO" if args.verbose else "ERROR"
            server, url = stack.enter_context(local_stack(handler_log_level=handler_log_level))
            runs = run_campaign(
                schema, url, max_examples=args.max_examples, seed=args.seed, modes=args.modes
            )
            handler_failures = server.handler_failures
    except (DynaliteError, LoaderError, FuzzSetupError) as error:
        print(f"error: cannot start the local stack: {error}", file=sys.stderr)
        return 1

    print(format_summary(runs, handler_failures))
    print(f"Finished in {time.monotonic() - started:.1f} s (seed {args.seed})")
    if args.json:
        summary = {
            "seed": args.seed,
            "max_examples": args.max_examples,
            "handler_failures": handler_failures,
            "runs": [run.as_dict() for run in runs],
        }
        Path(args.json).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    failed = any(run.failures for run in runs) or handler_failures > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
