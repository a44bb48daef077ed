"""Import user-item interactions from a file into a DynamoDB table.

Usage: python -m tools.loader PATH [--format auto|csv|jsonl|movielens|udata]
       [--table NAME] [--endpoint-url URL] [--region REGION]
       [--rejects-file FILE] [--no-progress] [--verbose]

The file is streamed: rows are validated one at a time (see
tools/interaction_formats.py) and written with BatchWriteItem, so memory
stays bounded by one batch. Each (user_id, item_id) pair is one item, so a
second run of the same file leaves the table unchanged. docs/loader.md
describes the formats, the validation rules and the report.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import boto3
from boto3.dynamodb.types import TypeSerializer
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
)
from tqdm import tqdm

from tools.interaction_formats import (
    FORMATS,
    READERS,
    FormatError,
    Interaction,
    RejectedRow,
    detect_format,
    open_text,
)

logger = logging.getLogger(__name__)

DEFAULT_TABLE = "UserInteractions"
TABLE_NAME_ENV = "TABLE_NAME"

# BatchWriteItem accepts at most 25 put or delete requests per call.
MAX_BATCH_ITEMS = 25

# The report and the API keep the first rejections only, so a file of
# garbage cannot fill memory. --rejects-file receives every one of them.
MAX_REJECTIONS_KEPT = 10_000
REJECTIONS_SHOWN = 20

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

# Table names that DynamoDB accepts (the same pattern as the template parameter).
TABLE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{3,255}")

# botocore retries throttled, failed and unreachable calls itself ("standard"
# mode, exponential backoff with jitter). Five calls in total keep a load
# going through short throttling while a stopped local server still fails
# within seconds. UnprocessedItems in a successful response are the
# loader's own job, see BatchWriter.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 5},
    connect_timeout=5,
    read_timeout=30,
)


class LoaderError(Exception):
    """A fatal error that stops the load. The message states what failed and what to do next."""


class InputFileError(LoaderError):
    """The input file is missing, unreadable or not in a known format."""


class TableNotFoundError(LoaderError):
    """The target table does not exist at the endpoint."""

    def __init__(self, table_name: str, endpoint_url: str, region: str | None) -> None:
        super().__init__(
            f"table {table_name!r} was not found at {endpoint_url} (region {region}). Create"
            " it from the UserInteractionsTable definition in template.yaml (on AWS,"
            " `sam deploy` does that), or pass --table or --endpoint-url to point at the"
            " right one"
        )
        self.table_name = table_name
        self.endpoint_url = endpoint_url


class DynamoDBWriteError(LoaderError):
    """A BatchWriteItem call failed after botocore's own retries."""


class UnprocessedItemsError(DynamoDBWriteError):
    """Some rows stayed in UnprocessedItems after the last retry, so they were not written."""

    def __init__(
        self,
        unprocessed: int,
        attempts: int,
        table_name: str,
        *,
        rows_written: int | None = None,
        last_line: int | None = None,
    ) -> None:
        message = (
            f"{unprocessed} rows were not written to table {table_name!r}: DynamoDB still"
            f" returned them as UnprocessedItems after {attempts} BatchWriteItem attempts"
            " (the table or an index is probably throttled)."
        )
        if rows_written is not None and last_line is not None:
            message += f" The load stopped at line {last_line} after writing {rows_written} rows."
        message += (
            " Rerun the loader later: it is idempotent, so rows written already are"
            " only overwritten with the same values"
        )
        super().__init__(message)
        self.unprocessed = unprocessed
        self.attempts = attempts
        self.rows_written = rows_written


@dataclass
class LoadReport:
    """Counts of one load. rows_read = rows_written + rows_rejected + duplicates_merged."""

    rows_read: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    # Rows whose (user_id, item_id) appeared again later in the same batch, so
    # only the later row was sent.
    duplicates_merged: int = 0
    # (line number, reason) of the first MAX_REJECTIONS_KEPT rejected rows.
    rejections: list[tuple[int, str]] = field(default_factory=list)
    path: str = ""
    table_name: str = ""
    file_format: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for rows that BatchWriteItem returns in UnprocessedItems."""

    max_attempts: int = 8  # BatchWriteItem calls per batch, the first one included
    base_delay_seconds: float = 0.05
    max_delay_seconds: float = 5.0

    def delay_seconds(self, retry_number: int, rng: random.Random) -> float:
        """Return the wait before retry `retry_number` (1 for the first retry).

        Exponential backoff with full jitter: a uniform draw from zero up to
        base * 2^(retry_number - 1), capped at max_delay_seconds, so that
        parallel loaders do not retry in step.
        """
        ceiling = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (retry_number - 1))
        return rng.uniform(0.0, ceiling)


def create_client(endpoint_url: str | None = None, region: str | None = None) -> Any:
    """Create a DynamoDB client with explicit retry settings.

    With endpoint_url None, boto3 uses AWS_ENDPOINT_URL_DYNAMODB (or
    AWS_ENDPOINT_URL) when set, and the AWS endpoint of the region otherwise.
    """
    try:
        return boto3.client(
            "dynamodb", endpoint_url=endpoint_url, region_name=region, config=CLIENT_CONFIG
        )
    except NoRegionError:
        raise LoaderError(
            "no AWS Region is set; pass --region or set AWS_REGION (for a local endpoint"
            " any Region name, such as us-east-1, works)"
        ) from None


class BatchWriter:
    """Writes batches of interactions with BatchWriteItem and retries UnprocessedItems."""

    def __init__(
        self,
        client: Any,
        table_name: str,
        retry: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._table_name = table_name
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._serializer = TypeSerializer()

    def write(self, interactions: Sequence[Interaction]) -> None:
        """Put every interaction, or raise. The batch must have at most 25 distinct keys."""
        if len(interactions) > MAX_BATCH_ITEMS:
            raise ValueError(
                f"a batch holds at most {MAX_BATCH_ITEMS} items, got {len(interactions)}"
            )
        requests = [{"PutRequest": {"Item": self._to_item(item)}} for item in interactions]
        attempt = 1
        while requests:
            response = self._batch_write(requests)
            requests = response.get("UnprocessedItems", {}).get(self._table_name, [])
            if not requests:
                return
            if attempt >= self._retry.max_attempts:
                raise UnprocessedItemsError(len(requests), attempt, self._table_name)
            delay = self._retry.delay_seconds(attempt, self._rng)
            logger.info(
                "Retrying %d unprocessed items in %.3f s (attempt %d of %d)",
                len(requests),
                delay,
                attempt + 1,
                self._retry.max_attempts,
            )
            self._sleep(delay)
            attempt += 1

    def _to_item(self, interaction: Interaction) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "user_id": interaction.user_id,
            "item_id": interaction.item_id,
            "interaction_type": interaction.interaction_type,
            "timestamp": interaction.timestamp,
        }
        if interaction.weight is not None:
            attributes["weight"] = interaction.weight
        return {name: self._serializer.serialize(value) for name, value in attributes.items()}

    def _batch_write(self, requests: list[dict[str, Any]]) -> dict[str, Any]:
        endpoint = self._client.meta.endpoint_url
        try:
            return self._client.batch_write_item(RequestItems={self._table_name: requests})
        except ClientError as error:
            details = error.response.get("Error", {})
            code = details.get("Code", "")
            if code == "ResourceNotFoundException":
                raise TableNotFoundError(
                    self._table_name, endpoint, self._client.meta.region_name
                ) from None
            raise DynamoDBWriteError(
                f"BatchWriteItem on table {self._table_name!r} at {endpoint} failed:"
                f" {code}: {details.get('Message', '')}"
            ) from error
        except EndpointConnectionError:
            raise DynamoDBWriteError(
                f"cannot connect to the DynamoDB endpoint {endpoint}; start the local"
                " server, or fix --endpoint-url or AWS_ENDPOINT_URL_DYNAMODB"
            ) from None
        except NoCredentialsError:
            raise DynamoDBWriteError(
                "no AWS credentials were found; configure a profile or set"
                " AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (a local endpoint accepts"
                " any values)"
            ) from None
        except BotoCoreError as error:
            raise DynamoDBWriteError(
                f"BatchWriteItem on table {self._table_name!r} at {endpoint} failed: {error}"
            ) from error


class _RejectsSink:
    """Records rejected rows in the report and, when given a file, writes all of them there."""

    def __init__(self, report: LoadReport, output: TextIO | None) -> None:
        self._report = report
        self._writer = csv.writer(output) if output is not None else None
        if self._writer is not None:
            self._writer.writerow(["line_number", "reason"])

    def add(self, rejected: RejectedRow) -> None:
        self._report.rows_rejected += 1
        if len(self._report.rejections) < MAX_REJECTIONS_KEPT:
            self._report.rejections.append((rejected.line_number, rejected.reason))
        if self._writer is not None:
            self._writer.writerow([rejected.line_number, rejected.reason])


def _resolve_format(path: Path, file_format: str) -> str:
    if file_format == "auto":
        try:
            return detect_format(path)
        except FormatError as error:
            raise InputFileError(str(error)) from None
        except OSError as error:
            raise InputFileError(f"cannot read {path}: {error.strerror}") from None
    if file_format not in FORMATS:
        raise InputFileError(
            f"unknown format {file_format!r}; use auto or one of {', '.join(FORMATS)}"
        )
    return file_format


def _check_input_file(path: Path) -> None:
    if not path.exists():
        raise InputFileError(f"input file {path} was not found; check the path")
    if not path.is_file():
        raise InputFileError(f"{path} is not a regular file; pass the path of a data file")


def load_file(
    path: str | Path,
    table_name: str,
    *,
    client: Any = None,
    file_format: str = "auto",
    progress: bool = True,
    rejects_file: str | Path | None = None,
    retry: RetryPolicy | None = None,
) -> LoadReport:
    """Load the interactions in `path` into `table_name` and return the counts.

    `client` is a boto3 DynamoDB client (default: create_client()).
    `file_format` is "auto" or one of FORMATS. Rejected rows are counted and
    listed, and every one of them is written to `rejects_file` when given.
    Raises a LoaderError subclass for fatal errors: InputFileError,
    TableNotFoundError, DynamoDBWriteError or UnprocessedItemsError.
    """
    source = Path(path)
    _check_input_file(source)
    resolved_format = _resolve_format(source, file_format)
    dynamodb = client if client is not None else create_client()
    writer = BatchWriter(dynamodb, table_name, retry)
    report = LoadReport(path=str(source), table_name=table_name, file_format=resolved_format)
    started = time.monotonic()
    logger.info(
        "Loading %s (format %s) into table %s at %s",
        source,
        resolved_format,
        table_name,
        dynamodb.meta.endpoint_url,
    )

    with ExitStack() as stack:
        try:
            binary = stack.enter_context(source.open("rb"))
        except OSError as error:
            raise InputFileError(f"cannot open {source}: {error.strerror}") from None
        rejects_output = None
        if rejects_file is not None:
            try:
                rejects_output = stack.enter_context(
                    Path(rejects_file).open("w", encoding="utf-8", newline="")
                )
            except OSError as error:
                raise LoaderError(
                    f"cannot write the rejects file {rejects_file}: {error.strerror}"
                ) from None
        text = stack.enter_context(open_text(binary))
        bar = stack.enter_context(
            tqdm(
                total=os.fstat(binary.fileno()).st_size,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"Loading {source.name}",
                file=sys.stderr,
                # None disables the bar when stderr is not a terminal.
                disable=None if progress else True,
            )
        )
        rejects = _RejectsSink(report, rejects_output)
        # Keyed by (user_id, item_id): a later row with the same key replaces
        # the earlier one, because DynamoDB rejects a batch that contains one
        # key twice, and the last row is what sequential puts would leave.
        pending: dict[tuple[str, str], Interaction] = {}
        last_line = 0

        def flush() -> None:
            if not pending:
                return
            try:
                writer.write(list(pending.values()))
            except UnprocessedItemsError as error:
                raise UnprocessedItemsError(
                    error.unprocessed,
                    error.attempts,
                    table_name,
                    rows_written=report.rows_written + len(pending) - error.unprocessed,
                    last_line=last_line,
                ) from None
            report.rows_written += len(pending)
            pending.clear()
            bar.update(binary.tell() - bar.n)
            # Strings, because tqdm shows numbers in scientific notation (2e+4).
            bar.set_postfix(
                written=str(report.rows_written),
                rejected=str(report.rows_rejected),
                refresh=False,
            )

        try:
            for row in READERS[resolved_format](text):
                report.rows_read += 1
                last_line = row.line_number
                if isinstance(row, RejectedRow):
                    rejects.add(row)
                    continue
                key = row.interaction.key
                if key in pending:
                    report.duplicates_merged += 1
                pending[key] = row.interaction
                if len(pending) >= MAX_BATCH_ITEMS:
                    flush()
            flush()
        except FormatError as error:
            raise InputFileError(f"{source}: {error}") from None
        except OSError as error:
            raise InputFileError(f"an I/O error stopped the load of {source}: {error}") from None

    logger.info(
        "Loaded %s in %.1f s: %d rows read, %d written, %d rejected, %d duplicates merged",
        source,
        time.monotonic() - started,
        report.rows_read,
        report.rows_written,
        report.rows_rejected,
        report.duplicates_merged,
    )
    return report


def format_report(
    report: LoadReport,
    *,
    rejects_file: str | Path | None = None,
    max_shown: int = REJECTIONS_SHOWN,
) -> str:
    """Return the human-readable summary of a load, with the first rejected rows."""
    lines = [
        f"Loaded {report.path} into table {report.table_name} (format {report.file_format})",
        f"  rows read:          {report.rows_read}",
        f"  rows written:       {report.rows_written}",
        f"  rows rejected:      {report.rows_rejected}",
        (
            f"  duplicates merged:  {report.duplicates_merged}"
            " (same user_id and item_id in one batch; the last row was kept)"
        ),
    ]
    if report.rows_rejected == 0:
        return "\n".join(lines)

    shown = report.rejections[:max_shown]
    lines.append(f"Rejected rows (first {len(shown)} of {report.rows_rejected}):")
    lines.extend(f"  line {line_number}: {reason}" for line_number, reason in shown)
    hidden = report.rows_rejected - len(shown)
    if rejects_file is not None:
        lines.append(f"All {report.rows_rejected} rejected rows are listed in {rejects_file}")
    elif hidden > 0:
        lines.append(f"  ... {hidden} more; pass --rejects-file FILE to list all of them")
    return "\n".join(lines)


def _table_name(value: str) -> str:
    if not TABLE_NAME_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"invalid table name {value!r}: use 3 to 255 letters, digits, '_', '-' or '.'"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    """Build the command-line parser of `python -m tools.loader`."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.loader",
        description="Import user-item interactions from a file into a DynamoDB table.",
    )
    parser.add_argument("path", metavar="PATH", help="file to import")
    parser.add_argument(
        "--format",
        dest="file_format",
        choices=("auto", *FORMATS),
        default="auto",
        help="input format (default: auto, detected from the extension and first line)",
    )
    parser.add_argument(
        "--table",
        type=_table_name,
        default=os.environ.get(TABLE_NAME_ENV, DEFAULT_TABLE),
        help=f"target table (default: ${TABLE_NAME_ENV}, else {DEFAULT_TABLE})",
    )
    parser.add_argument(
        "--endpoint-url",
        help="DynamoDB endpoint, e.g. http://127.0.0.1:8000 for a local server"
        " (default: $AWS_ENDPOINT_URL_DYNAMODB, else the AWS endpoint of the region)",
    )
    parser.add_argument("--region", help="AWS Region (default: the boto3 configuration)")
    parser.add_argument(
        "--rejects-file",
        metavar="FILE",
        help="write every rejected row (line_number,reason) to this CSV file",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="do not show the progress bar on stderr"
    )
    parser.add_argument("--verbose", action="store_true", help="log retries and timings to stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the loader command line and return the process exit code.

    0 on success (also when rows were rejected), 1 on a fatal error, 2 for
    invalid arguments (from argparse), 130 when interrupted.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        client = create_client(args.endpoint_url, args.region)
        report = load_file(
            args.path,
            args.table,
            client=client,
            file_format=args.file_format,
            progress=not args.no_progress,
            rejects_file=args.rejects_file,
        )
    except LoaderError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(
            "interrupted: the load is incomplete; rerun the same command to finish it"
            " (rows written already are overwritten with the same values)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED

    print(format_report(report, rejects_file=args.rejects_file))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
