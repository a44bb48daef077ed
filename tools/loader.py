"""Import user-item interactions from a file into a DynamoDB table.

Usage: python -m tools.loader PATH [--format auto|csv|jsonl|movielens|udata]
       [--table NAME] [--endpoint-url URL] [--region REGION]
       [--rejects-file FILE] [--checkpoint FILE | --no-checkpoint] [--resume]
       [--verify] [--no-progress] [--verbose]

The file is streamed: rows are validated one at a time (see
tools/interaction_formats.py) and written with BatchWriteItem, so memory
stays bounded by one batch. Each (user_id, item_id) pair is one item, so a
second run of the same file leaves the table unchanged. After every fully
written batch the command line saves a checkpoint (tools/loader_checkpoint.py),
so `--resume` continues an interrupted load after the last completed line.
`--verify` reads every key back with BatchGetItem. docs/loader.md describes
the formats, the validation rules, resuming and the report.
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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
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
from tools.loader_checkpoint import (
    DEFAULT_CHECKPOINT_DIR,
    Checkpoint,
    CheckpointError,
    FileFingerprint,
    LoadCounts,
    RejectsFileState,
    check_resumable,
    default_checkpoint_path,
    read_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)

logger = logging.getLogger(__name__)

DEFAULT_TABLE = "UserInteractions"
TABLE_NAME_ENV = "TABLE_NAME"

# BatchWriteItem accepts at most 25 put or delete requests per call, and
# BatchGetItem at most 100 keys.
MAX_BATCH_ITEMS = 25
MAX_BATCH_GET_KEYS = 100

# Minimum time between two checkpoint saves; see _CheckpointRecorder.
DEFAULT_CHECKPOINT_INTERVAL_SECONDS = 1.0

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


class ResumeError(LoaderError):
    """The checkpoint cannot be resumed: it is invalid, or it belongs to another file or table."""


class VerificationError(LoaderError):
    """The verification read could not check every key (BatchGetItem kept keys unprocessed)."""


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
    """Counts of one load. rows_read = rows_written + rows_rejected + duplicates_merged.

    After a resume the counts are cumulative: they include the rows that earlier
    runs handled through line `resumed_after_line`.
    """

    rows_read: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    # Rows whose (user_id, item_id) appeared again later in the same batch, so
    # only the later row was sent.
    duplicates_merged: int = 0
    # (line number, reason) of the first MAX_REJECTIONS_KEPT rejected rows. A
    # resumed run carries over only the first REJECTIONS_SHOWN of earlier runs,
    # because the checkpoint stores no more.
    rejections: list[tuple[int, str]] = field(default_factory=list)
    path: str = ""
    table_name: str = ""
    file_format: str = ""
    # 0 for a load from the top; otherwise the checkpoint line this run continued after.
    resumed_after_line: int = 0
    rows_read_before_resume: int = 0

    def counts(self) -> LoadCounts:
        return LoadCounts(
            rows_read=self.rows_read,
            rows_written=self.rows_written,
            rows_rejected=self.rows_rejected,
            duplicates_merged=self.duplicates_merged,
        )


@dataclass
class VerifyReport:
    """Result of reading back the key of every valid row of a file with BatchGetItem."""

    rows_checked: int = 0
    # Distinct keys per BatchGetItem request, summed: a key repeated in the file
    # is looked up again when it falls into another request.
    keys_requested: int = 0
    keys_missing: int = 0
    # (line number, user_id, item_id) of the first REJECTIONS_SHOWN missing keys.
    missing: list[tuple[int, str, str]] = field(default_factory=list)
    batch_get_calls: int = 0


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
            "no AWS Region is set; pass --region or set AWS_DEFAULT_REGION (for a local endpoint"
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
        return _call_dynamodb(
            self._client,
            "BatchWriteItem",
            self._table_name,
            lambda: self._client.batch_write_item(RequestItems={self._table_name: requests}),
        )


def _call_dynamodb(
    client: Any, operation: str, table_name: str, call: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Run `call` and turn botocore errors into LoaderErrors that name the table and endpoint.

    The errors are TableNotFoundError or DynamoDBWriteError, which also covers the
    BatchGetItem reads of verify_load because it predates them.
    """
    endpoint = client.meta.endpoint_url
    try:
        return call()
    except ClientError as error:
        details = error.response.get("Error", {})
        code = details.get("Code", "")
        if code == "ResourceNotFoundException":
            raise TableNotFoundError(table_name, endpoint, client.meta.region_name) from None
        raise DynamoDBWriteError(
            f"{operation} on table {table_name!r} at {endpoint} failed:"
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
            f"{operation} on table {table_name!r} at {endpoint} failed: {error}"
        ) from error


class _RejectsSink:
    """Records rejected rows in the report and, when given a file, writes all of them there."""

    def __init__(self, report: LoadReport, output: TextIO | None, *, header: bool = True) -> None:
        self._report = report
        self._output = output
        self._writer = csv.writer(output) if output is not None else None
        if self._writer is not None and header:
            self._writer.writerow(["line_number", "reason"])

    def file_state(self) -> RejectsFileState | None:
        """Flush the rejects file and return its path and size, for the checkpoint."""
        if self._output is None:
            return None
        self._output.flush()
        return RejectsFileState(
            path=str(Path(self._output.name).resolve()),
            size_bytes=os.fstat(self._output.fileno()).st_size,
        )

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


class _CheckpointRecorder:
    """Keeps the progress of one load and saves it to the checkpoint file.

    `batch_done` runs after every fully acknowledged batch and saves at most once per
    `interval_seconds`. A save (write and rename) took about 2 ms on the development
    machine's ext4 disk, a fifth of the time of one BatchWriteItem call to dynalite.
    `save_latest` saves the last acknowledged batch when a load stops with an exception.
    So only a SIGKILL, a power cut or the like loses progress, at most `interval_seconds`
    of it, and the resumed run sends those batches again.
    """

    def __init__(
        self,
        path: Path,
        base: Checkpoint,
        interval_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._base = base
        self._interval_seconds = interval_seconds
        self._clock = clock
        self._latest: Checkpoint | None = None
        self._latest_saved = True
        self._last_save = float("-inf")
        self.saves = 0

    def batch_done(self, report: LoadReport, line: int, rejects: RejectsFileState | None) -> None:
        """Record that every row through `line` is handled; save if the interval has passed."""
        self._latest = replace(
            self._base,
            completed_through_line=line,
            counts=report.counts(),
            rejections=tuple(report.rejections[:REJECTIONS_SHOWN]),
            rejects_file=rejects,
        )
        self._latest_saved = False
        if self._clock() - self._last_save >= self._interval_seconds:
            self._save()

    def save_latest(self) -> None:
        """Save the last recorded progress if an earlier save does not already hold it."""
        if self._latest is not None and not self._latest_saved:
            self._save()

    def _save(self) -> None:
        assert self._latest is not None
        checkpoint = replace(self._latest, saved_at=datetime.now(UTC).isoformat(timespec="seconds"))
        try:
            save_checkpoint(self.path, checkpoint)
        except OSError as error:
            raise LoaderError(
                f"cannot write the checkpoint {self.path}: {error.strerror}; pass --checkpoint"
                " with a file in a writable folder, or --no-checkpoint"
            ) from None
        self._latest_saved = True
        self._last_save = self._clock()
        self.saves += 1


def _prepare_checkpoint(
    source: Path,
    checkpoint_path: Path,
    resume: bool,
    *,
    file_format: str,
    table_name: str,
    endpoint_url: str,
    interval_seconds: float,
) -> tuple[_CheckpointRecorder, Checkpoint | None]:
    """Return the recorder of this load and, when resuming, the checkpoint to continue from."""
    try:
        fingerprint = FileFingerprint.of(source)
    except OSError as error:
        raise InputFileError(f"cannot read {source}: {error.strerror}") from None
    previous: Checkpoint | None = None
    try:
        if resume:
            previous = read_checkpoint(checkpoint_path)
            if previous is None:
                logger.warning(
                    "No checkpoint at %s, so %s is loaded from the top", checkpoint_path, source
                )
            else:
                check_resumable(
                    previous,
                    checkpoint_path,
                    fingerprint=fingerprint,
                    file_format=file_format,
                    table_name=table_name,
                    endpoint_url=endpoint_url,
                )
        elif checkpoint_path.exists():
            # A stale checkpoint must not outlive a fresh start: if this run stopped before
            # its first batch, a later --resume would skip rows that may no longer be stored.
            logger.info(
                "Loading from the top, so the checkpoint %s of an earlier run is deleted"
                " (pass --resume to continue it instead)",
                checkpoint_path,
            )
            remove_checkpoint(checkpoint_path)
    except CheckpointError as error:
        raise ResumeError(str(error)) from None
    except OSError as error:
        raise ResumeError(
            f"cannot delete the old checkpoint {checkpoint_path}: {error.strerror}"
        ) from None
    base = Checkpoint(
        input_path=str(source.resolve()),
        fingerprint=fingerprint,
        file_format=file_format,
        table_name=table_name,
        endpoint_url=endpoint_url,
        completed_through_line=0,
        counts=LoadCounts(),
    )
    return _CheckpointRecorder(checkpoint_path, base, interval_seconds), previous


def _open_rejects_output(
    stack: ExitStack, rejects_file: str | Path, previous: Checkpoint | None
) -> tuple[TextIO, bool]:
    """Open the rejects file and return it with whether it still needs its header line.

    When resuming with the rejects file that the checkpoint recorded, the file is cut back
    to its size at the checkpoint and then appended to. The rows rejected after the
    checkpoint line are read again, so their lines from the interrupted run would repeat.
    """
    target = Path(rejects_file)
    recorded = previous.rejects_file if previous is not None else None
    try:
        if (
            recorded is not None
            and target.is_file()
            and str(target.resolve()) == recorded.path
            and target.stat().st_size >= recorded.size_bytes
        ):
            with target.open("r+b") as existing:
                existing.truncate(recorded.size_bytes)
            return stack.enter_context(target.open("a", encoding="utf-8", newline="")), False
        if previous is not None and previous.counts.rows_rejected:
            logger.warning(
                "%s is not the rejects file of the checkpoint, so it lists only the rows"
                " rejected after line %d",
                target,
                previous.completed_through_line,
            )
        return stack.enter_context(target.open("w", encoding="utf-8", newline="")), True
    except OSError as error:
        raise LoaderError(
            f"cannot write the rejects file {rejects_file}: {error.strerror}"
        ) from None


def _continue_report(report: LoadReport, previous: Checkpoint) -> None:
    """Start the counts of a resumed load from those of the checkpoint."""
    counts = previous.counts
    report.rows_read = counts.rows_read
    report.rows_written = counts.rows_written
    report.rows_rejected = counts.rows_rejected
    report.duplicates_merged = counts.duplicates_merged
    report.rejections = list(previous.rejections)
    report.resumed_after_line = previous.completed_through_line
    report.rows_read_before_resume = counts.rows_read


def _save_on_the_way_out(recorder: _CheckpointRecorder) -> None:
    # Runs while another exception propagates, which must stay the one the caller gets.
    try:
        recorder.save_latest()
    except LoaderError as error:
        logger.warning("The progress since the last checkpoint save is lost: %s", error)


def load_file(
    path: str | Path,
    table_name: str,
    *,
    client: Any = None,
    file_format: str = "auto",
    progress: bool = True,
    rejects_file: str | Path | None = None,
    retry: RetryPolicy | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    checkpoint_interval_seconds: float = DEFAULT_CHECKPOINT_INTERVAL_SECONDS,
) -> LoadReport:
    """Load the interactions in `path` into `table_name` and return the counts.

    `client` is a boto3 DynamoDB client (default: create_client()).
    `file_format` is "auto" or one of FORMATS. Rejected rows are counted and
    listed, and every one of them is written to `rejects_file` when given.

    With `checkpoint`, the progress is saved to that file after a fully
    written batch, at most once per `checkpoint_interval_seconds` (0: after
    every batch) and once more when the load stops with an exception. The file
    is deleted when the load completes. With `resume` as well, the load
    continues after the line recorded there, and the report counts the rows of
    the earlier runs too; without a checkpoint file it starts from the top.

    Raises a LoaderError subclass for fatal errors: InputFileError,
    TableNotFoundError, DynamoDBWriteError, UnprocessedItemsError or
    ResumeError (the checkpoint is invalid or belongs to another file, format,
    table or endpoint).
    """
    source = Path(path)
    _check_input_file(source)
    resolved_format = _resolve_format(source, file_format)
    dynamodb = client if client is not None else create_client()
    endpoint_url = str(dynamodb.meta.endpoint_url)
    writer = BatchWriter(dynamodb, table_name, retry)
    report = LoadReport(path=str(source), table_name=table_name, file_format=resolved_format)

    recorder: _CheckpointRecorder | None = None
    previous: Checkpoint | None = None
    if checkpoint is not None:
        recorder, previous = _prepare_checkpoint(
            source,
            Path(checkpoint),
            resume,
            file_format=resolved_format,
            table_name=table_name,
            endpoint_url=endpoint_url,
            interval_seconds=checkpoint_interval_seconds,
        )
    elif resume:
        raise ResumeError("resuming needs the checkpoint file of the earlier run; pass checkpoint=")
    start_line = 0
    if previous is not None:
        _continue_report(report, previous)
        start_line = previous.completed_through_line

    started = time.monotonic()
    logger.info(
        "Loading %s (format %s) into table %s at %s",
        source,
        resolved_format,
        table_name,
        endpoint_url,
    )
    if previous is not None:
        logger.info(
            "Resuming after line %d from checkpoint %s (saved %s: %d rows read, %d written)",
            start_line,
            recorder.path if recorder is not None else "",
            previous.saved_at,
            previous.counts.rows_read,
            previous.counts.rows_written,
        )

    with ExitStack() as stack:
        try:
            binary = stack.enter_context(source.open("rb"))
        except OSError as error:
            raise InputFileError(f"cannot open {source}: {error.strerror}") from None
        rejects_output = None
        write_header = True
        if rejects_file is not None:
            rejects_output, write_header = _open_rejects_output(stack, rejects_file, previous)
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
        rejects = _RejectsSink(report, rejects_output, header=write_header)
        # Keyed by (user_id, item_id): a later row with the same key replaces
        # the earlier one, because DynamoDB rejects a batch that contains one
        # key twice, and the last row is what sequential puts would leave.
        pending: dict[tuple[str, str], Interaction] = {}
        last_line = start_line
        completed = False

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
            # Every row through last_line is now written, rejected or merged: the
            # batch that just succeeded held all valid rows not yet written.
            if recorder is not None:
                recorder.batch_done(report, last_line, rejects.file_state())
            bar.update(binary.tell() - bar.n)
            # Strings, because tqdm shows numbers in scientific notation (2e+4).
            bar.set_postfix(
                written=str(report.rows_written),
                rejected=str(report.rows_rejected),
                refresh=False,
            )

        try:
            for row in READERS[resolved_format](text):
                # Rows are yielded in line order, so this skips exactly the rows the
                # checkpoint covers; they are parsed again but neither counted nor sent.
                if row.line_number <= start_line:
                    continue
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
            completed = True
        except FormatError as error:
            raise InputFileError(f"{source}: {error}") from None
        except OSError as error:
            raise InputFileError(f"an I/O error stopped the load of {source}: {error}") from None
        finally:
            if recorder is not None and not completed:
                _save_on_the_way_out(recorder)

    if recorder is not None:
        remove_checkpoint(recorder.path)
        logger.info(
            "Load complete; deleted checkpoint %s (saved %d times)", recorder.path, recorder.saves
        )
    logger.info(
        "Loaded %s in %.1f s: %d rows read, %d written, %d rejected, %d duplicates merged"
        " (cumulative; %d rows read before this run)",
        source,
        time.monotonic() - started,
        report.rows_read,
        report.rows_written,
        report.rows_rejected,
        report.duplicates_merged,
        report.rows_read_before_resume,
    )
    return report


class _KeyChecker:
    """Looks keys up with BatchGetItem and retries UnprocessedKeys."""

    def __init__(
        self,
        client: Any,
        table_name: str,
        retry: RetryPolicy,
        sleep: Callable[[float], None],
        rng: random.Random,
    ) -> None:
        self._client = client
        self._table_name = table_name
        self._retry = retry
        self._sleep = sleep
        self._rng = rng
        self.calls = 0

    def missing_keys(self, keys: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """Return the keys, at most 100 and distinct, that the table does not hold."""
        request: dict[str, Any] = {
            "Keys": [{"user_id": {"S": user}, "item_id": {"S": item}} for user, item in keys],
            # A strongly consistent read sees every write that DynamoDB acknowledged.
            "ConsistentRead": True,
            "ProjectionExpression": "#user, #item",
            "ExpressionAttributeNames": {"#user": "user_id", "#item": "item_id"},
        }
        found: set[tuple[str, str]] = set()
        attempt = 1
        while True:
            response = self._batch_get(request)
            self.calls += 1
            for item in response.get("Responses", {}).get(self._table_name, []):
                found.add((item["user_id"]["S"], item["item_id"]["S"]))
            unprocessed = response.get("UnprocessedKeys", {}).get(self._table_name)
            if not unprocessed or not unprocessed.get("Keys"):
                break
            if attempt >= self._retry.max_attempts:
                raise VerificationError(
                    f"{len(unprocessed['Keys'])} keys stayed in UnprocessedKeys after {attempt}"
                    f" BatchGetItem attempts on table {self._table_name!r}, so the verification"
                    " is incomplete; rerun it later with --verify"
                )
            delay = self._retry.delay_seconds(attempt, self._rng)
            logger.info(
                "Retrying %d unprocessed keys in %.3f s (attempt %d of %d)",
                len(unprocessed["Keys"]),
                delay,
                attempt + 1,
                self._retry.max_attempts,
            )
            self._sleep(delay)
            request = unprocessed
            attempt += 1
        return [key for key in keys if key not in found]

    def _batch_get(self, request: dict[str, Any]) -> dict[str, Any]:
        return _call_dynamodb(
            self._client,
            "BatchGetItem",
            self._table_name,
            lambda: self._client.batch_get_item(RequestItems={self._table_name: request}),
        )


def verify_load(
    path: str | Path,
    table_name: str,
    *,
    client: Any = None,
    file_format: str = "auto",
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> VerifyReport:
    """Read back the key of every valid row of `path` and count those missing from the table.

    The file is read again from the top and keys are looked up with consistent
    BatchGetItem calls of up to 100 distinct keys. Only presence is checked,
    because a later row of the file may have replaced an item's values.
    Raises the LoaderErrors of load_file, and VerificationError when keys stay
    unprocessed after `retry.max_attempts` calls.
    """
    source = Path(path)
    _check_input_file(source)
    resolved_format = _resolve_format(source, file_format)
    dynamodb = client if client is not None else create_client()
    checker = _KeyChecker(
        dynamodb, table_name, retry or RetryPolicy(), sleep, rng or random.Random()
    )
    report = VerifyReport()
    started = time.monotonic()
    # Key -> line of its last row in the current request.
    pending: dict[tuple[str, str], int] = {}

    def check_pending() -> None:
        if not pending:
            return
        missing = checker.missing_keys(list(pending))
        report.keys_requested += len(pending)
        report.keys_missing += len(missing)
        for key in missing:
            if len(report.missing) < REJECTIONS_SHOWN:
                report.missing.append((pending[key], key[0], key[1]))
        pending.clear()

    try:
        with source.open("rb") as binary, open_text(binary) as text:
            for row in READERS[resolved_format](text):
                if isinstance(row, RejectedRow):
                    continue
                report.rows_checked += 1
                pending[row.interaction.key] = row.line_number
                if len(pending) >= MAX_BATCH_GET_KEYS:
                    check_pending()
            check_pending()
    except FormatError as error:
        raise InputFileError(f"{source}: {error}") from None
    except OSError as error:
        raise InputFileError(
            f"an I/O error stopped the verification of {source}: {error}"
        ) from None

    report.missing.sort()
    report.batch_get_calls = checker.calls
    logger.info(
        "Verified %s against table %s in %.1f s: %d valid rows, %d keys looked up in %d"
        " BatchGetItem calls, %d missing",
        source,
        table_name,
        time.monotonic() - started,
        report.rows_checked,
        report.keys_requested,
        report.batch_get_calls,
        report.keys_missing,
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
    ]
    if report.resumed_after_line:
        lines.append(
            f"  resumed after line {report.resumed_after_line}: the counts include the"
            f" {report.rows_read_before_resume} rows read by earlier runs"
        )
    lines += [
        f"  rows read:          {report.rows_read}",
        f"  rows written:       {report.rows_written}",
        f"  rows rejected:      {report.rows_rejected}",
        (
            f"  duplicates merged:  {report.duplicates_merged}"
            " (same user_id and item_id in one batch; the last row was kept)"
        ),
    ]
    if report.resumed_after_line:
        handled = report.rows_written + report.rows_rejected + report.duplicates_merged
        verdict = "every row read is accounted for" if handled == report.rows_read else "MISMATCH"
        lines.append(
            f"  read = written + rejected + merged: {report.rows_read} ="
            f" {report.rows_written} + {report.rows_rejected} + {report.duplicates_merged}"
            f" ({verdict})"
        )
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


def format_verify_report(report: VerifyReport, table_name: str) -> str:
    """Return the human-readable result of verify_load, with the first missing keys."""
    summary = (
        f"Verified table {table_name}: {report.rows_checked} valid rows, {report.keys_requested}"
        f" keys looked up in {report.batch_get_calls} BatchGetItem calls,"
        f" {report.keys_missing} missing"
    )
    lines = [summary]
    if report.keys_missing:
        lines.append(f"Missing keys (first {len(report.missing)} of {report.keys_missing}):")
        lines.extend(
            f"  line {line_number}: user_id {user_id!r}, item_id {item_id!r}"
            for line_number, user_id, item_id in report.missing
        )
    return "\n".join(lines)


def _table_name(value: str) -> str:
    if not TABLE_NAME_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"invalid table name {value!r}: use 3 to 255 letters, digits, '_', '-' or '.'"
        )
    return value


def _non_negative_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"expected 0 or more seconds, got {value!r}")
    return seconds


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
    checkpointing = parser.add_mutually_exclusive_group()
    checkpointing.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="save the progress to this JSON file after every written batch, and delete it"
        " when the load completes (default: a file named after PATH and the table under"
        f" {DEFAULT_CHECKPOINT_DIR})",
    )
    checkpointing.add_argument(
        "--no-checkpoint", action="store_true", help="save no checkpoint, so --resume is impossible"
    )
    parser.add_argument(
        "--checkpoint-interval",
        metavar="SECONDS",
        type=_non_negative_seconds,
        default=DEFAULT_CHECKPOINT_INTERVAL_SECONDS,
        help="minimum time between two checkpoint saves, in seconds; 0 saves after every"
        " batch (default: %(default)s)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue after the last line recorded in the checkpoint; rejected when PATH, the"
        " format, the table or the endpoint changed since (without a checkpoint: load from the"
        " top)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="after the load, read back the key of every valid row with BatchGetItem and exit"
        " with status 1 if any is missing",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="do not show the progress bar on stderr"
    )
    parser.add_argument("--verbose", action="store_true", help="log retries and timings to stderr")
    return parser


def _checkpoint_path(args: argparse.Namespace) -> Path | None:
    if args.no_checkpoint:
        return None
    if args.checkpoint:
        return Path(args.checkpoint)
    return default_checkpoint_path(Path(args.path), args.table)


def _resume_hint(checkpoint_path: Path | None) -> str:
    """Build the error suffix that explains how to resume, or return "" without a checkpoint."""
    if checkpoint_path is None:
        return ""
    try:
        saved = read_checkpoint(checkpoint_path)
    except CheckpointError:
        return ""
    if saved is None:
        return ""
    return (
        f"; every row through line {saved.completed_through_line} is done (checkpoint"
        f" {checkpoint_path}), so rerun the same command with --resume to continue after it"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the loader command line and return the process exit code.

    0 on success (also when rows were rejected), 1 on a fatal error or when
    --verify finds missing keys, 2 for invalid arguments (from argparse), 130
    when interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume and args.no_checkpoint:
        parser.error("--resume needs a checkpoint; drop --no-checkpoint")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    checkpoint_path = _checkpoint_path(args)
    try:
        client = create_client(args.endpoint_url, args.region)
        report = load_file(
            args.path,
            args.table,
            client=client,
            file_format=args.file_format,
            progress=not args.no_progress,
            rejects_file=args.rejects_file,
            checkpoint=checkpoint_path,
            resume=args.resume,
            checkpoint_interval_seconds=args.checkpoint_interval,
        )
    except ResumeError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except LoaderError as error:
        print(f"error: {error}{_resume_hint(checkpoint_path)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        hint = _resume_hint(checkpoint_path)
        if hint:
            print(f"interrupted: the load is incomplete{hint}", file=sys.stderr)
        else:
            print(
                "interrupted: the load is incomplete; rerun the same command to finish it"
                " (rows written already are overwritten with the same values)",
                file=sys.stderr,
            )
        return EXIT_INTERRUPTED

    print(format_report(report, rejects_file=args.rejects_file))
    if not args.verify:
        return EXIT_OK
    try:
        verified = verify_load(args.path, args.table, client=client, file_format=report.file_format)
    except LoaderError as error:
        print(f"error: the verification failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted: the verification is incomplete", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(format_verify_report(verified, args.table))
    if verified.keys_missing:
        print(
            f"error: {verified.keys_missing} keys of {args.path} are missing from table"
            f" {args.table}; run the load again without --resume to write every row",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
