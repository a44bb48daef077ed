"""Functional tests of resuming an interrupted load and of --verify (tools/loader.py).

An interruption is simulated in two ways: an exception raised by a wrapped
client after N batches (moto), and a real `python -m tools.loader` process
killed with SIGKILL while it writes to dynalite on 127.0.0.1. Each test then
resumes and checks the table against the rows the test generated itself.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer
from moto import mock_aws

from tools.dynalite import local_client
from tools.loader import (
    LoaderError,
    LoadReport,
    ResumeError,
    RetryPolicy,
    VerificationError,
    load_file,
    main,
    verify_load,
)
from tools.loader_checkpoint import Checkpoint, read_checkpoint
from tools.template_table import create_table

TABLE = "UserInteractions"
REGION = "us-east-1"
REPO_ROOT = Path(__file__).resolve().parents[2]
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay_seconds=0.001, max_delay_seconds=0.002)
CSV_HEADER = "user_id,item_id,interaction_type,timestamp,weight\n"
T0 = 1_700_000_000
Key = tuple[str, str]


class SimulatedCrash(Exception):
    """Stands for a process that dies in the middle of a load."""


# --- Test data -------------------------------------------------------------------------


@dataclass
class GeneratedFile:
    """A CSV file of interactions and what a complete load of it must leave in the table."""

    path: Path
    data_rows: int = 0
    bad_lines: list[int] = field(default_factory=list)
    valid_rows: int = 0
    # The last valid row of each key, as the item DynamoDB must hold.
    expected_items: dict[Key, dict[str, Any]] = field(default_factory=dict)
    # Line number -> key, for every valid row.
    line_keys: dict[int, Key] = field(default_factory=dict)


def write_interactions(path: Path, data_rows: int) -> GeneratedFile:
    """Write `data_rows` rows with rejected rows and repeated keys at fixed positions.

    Every 97th row is invalid, every 50th repeats the previous row's key (usually in the
    same batch) and every 211th repeats the key of the row 120 lines earlier (another batch).
    """
    generated = GeneratedFile(path=path)
    lines = [CSV_HEADER]
    keys_by_row: list[Key | None] = []
    for n in range(data_rows):
        line_number = n + 2  # line 1 is the header
        if n % 97 == 13:
            lines.append(f"user-{n},item-{n},view,not-a-time,\n")
            generated.bad_lines.append(line_number)
            keys_by_row.append(None)
            continue
        previous = keys_by_row[n - 1] if n >= 1 else None
        earlier = keys_by_row[n - 120] if n >= 120 else None
        if n % 50 == 7 and previous is not None:
            key = previous
        elif n % 211 == 5 and earlier is not None:
            key = earlier
        else:
            key = (f"user-{n % 37}", f"item-{n}")
        interaction_type = ("view", "purchase", "rating")[n % 3]
        weight = None if n % 3 == 0 else f"{n % 5}.5"
        lines.append(f"{key[0]},{key[1]},{interaction_type},{T0 + n},{weight or ''}\n")
        item: dict[str, Any] = {
            "user_id": key[0],
            "item_id": key[1],
            "interaction_type": interaction_type,
            "timestamp": Decimal(T0 + n),
        }
        if weight is not None:
            item["weight"] = Decimal(weight)
        generated.expected_items[key] = item
        generated.line_keys[line_number] = key
        generated.valid_rows += 1
        keys_by_row.append(key)
    path.write_text("".join(lines), encoding="utf-8", newline="")
    generated.data_rows = data_rows
    return generated


def scan_items(client: Any, table: str = TABLE) -> dict[Key, dict[str, Any]]:
    """Return every item of the table as plain Python values, keyed by (user_id, item_id)."""
    deserializer = TypeDeserializer()
    items: dict[Key, dict[str, Any]] = {}
    scanned = 0
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for raw in page["Items"]:
            scanned += 1
            item = {name: deserializer.deserialize(value) for name, value in raw.items()}
            items[(item["user_id"], item["item_id"])] = item
    # A Scan returns each item once; a difference would mean the dict hid a repeated key.
    assert scanned == len(items)
    return items


def read_rejects(path: Path) -> list[int]:
    with path.open(encoding="utf-8", newline="") as rejects:
        rows = list(csv.reader(rejects))
    assert rows[0] == ["line_number", "reason"]
    return [int(row[0]) for row in rows[1:]]


# --- Clients ---------------------------------------------------------------------------


class FaultyClient:
    """Wraps a boto3 client, records each BatchWriteItem request, and can fail one call.

    On call number `fail_on_call` it first sends the first `sent_before_failure` requests
    of the batch (all of them when None), then raises `failure`.
    """

    def __init__(
        self,
        client: Any,
        fail_on_call: int | None = None,
        sent_before_failure: int | None = 0,
        failure: BaseException | None = None,
    ) -> None:
        self._client = client
        self._fail_on_call = fail_on_call
        self._sent_before_failure = sent_before_failure
        self._failure = failure or SimulatedCrash("simulated crash")
        self.requests: list[list[dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def batch_write_item(self, RequestItems: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        ((table, requests),) = RequestItems.items()
        if len(self.requests) + 1 == self._fail_on_call:
            count = (
                len(requests) if self._sent_before_failure is None else self._sent_before_failure
            )
            if count:
                self._client.batch_write_item(RequestItems={table: requests[:count]})
            raise self._failure
        self.requests.append(requests)
        return self._client.batch_write_item(RequestItems=RequestItems, **kwargs)

    def sent_keys(self, call_index: int) -> list[Key]:
        return [
            (
                request["PutRequest"]["Item"]["user_id"]["S"],
                request["PutRequest"]["Item"]["item_id"]["S"],
            )
            for request in self.requests[call_index]
        ]


class UnprocessedKeysClient:
    """Wraps a boto3 client and returns the last `held` keys of BatchGetItem calls unread.

    It holds keys back on the first `held_calls` calls (every call when None).
    """

    def __init__(self, client: Any, held: int, held_calls: int | None = 1) -> None:
        self._client = client
        self._held = held
        self._held_calls = held_calls
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def batch_get_item(self, RequestItems: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        ((table, request),) = RequestItems.items()
        if self._held_calls is not None and self.calls > self._held_calls:
            return self._client.batch_get_item(RequestItems=RequestItems, **kwargs)
        keys = request["Keys"]
        held = min(self._held, len(keys))
        read = {**request, "Keys": keys[: len(keys) - held]}
        response: dict[str, Any] = {"Responses": {table: []}}
        if read["Keys"]:
            response = self._client.batch_get_item(RequestItems={table: read}, **kwargs)
        response["UnprocessedKeys"] = {table: {**request, "Keys": keys[len(keys) - held :]}}
        return response


# --- Fixtures --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_table_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a TABLE_NAME from the shell away from the command-line tests."""
    monkeypatch.delenv("TABLE_NAME", raising=False)


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    """A moto DynamoDB client with the UserInteractions table from template.yaml."""
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        create_table(client, TABLE)
        yield client


def load(path: Path, client: Any, **options: Any) -> LoadReport:
    options.setdefault("progress", False)
    options.setdefault("retry", FAST_RETRY)
    return load_file(path, TABLE, client=client, **options)


def interrupt_load(
    generated: GeneratedFile,
    client: Any,
    checkpoint: Path,
    *,
    fail_on_call: int = 20,
    sent_before_failure: int | None = 10,
    **options: Any,
) -> Checkpoint:
    """Run a load that crashes on BatchWriteItem call `fail_on_call`; return its checkpoint."""
    faulty = FaultyClient(client, fail_on_call, sent_before_failure)
    with pytest.raises(SimulatedCrash):
        load(generated.path, faulty, checkpoint=checkpoint, **options)
    saved = read_checkpoint(checkpoint)
    assert saved is not None
    return saved


# --- Resume after an exception (moto) ------------------------------------------------------


@pytest.mark.parametrize(
    "sent_before_failure",
    [0, 10, None],
    ids=["batch-not-sent", "batch-half-written", "batch-written-checkpoint-not-saved"],
)
def test_resume_after_crash_loads_every_row(
    tmp_path: Path, dynamodb: Any, sent_before_failure: int | None
) -> None:
    generated = write_interactions(tmp_path / "interactions.csv", 1200)
    checkpoint = tmp_path / "load.checkpoint.json"
    rejects = tmp_path / "rejects.csv"

    saved = interrupt_load(
        generated,
        dynamodb,
        checkpoint,
        sent_before_failure=sent_before_failure,
        rejects_file=rejects,
    )
    stored_after_crash = scan_items(dynamodb)
    resumed_client = FaultyClient(dynamodb)
    report = load(
        generated.path, resumed_client, checkpoint=checkpoint, resume=True, rejects_file=rejects
    )

    # The crash came after 19 acknowledged batches, so the checkpoint is mid-file.
    last_line = generated.data_rows + 1
    assert 19 * 25 < saved.completed_through_line < last_line
    assert saved.counts.rows_written == 19 * 25
    assert 0 < len(stored_after_crash) < len(generated.expected_items)
    # The resumed run starts with the first valid row after the checkpoint line.
    first_valid_after = min(
        line for line in generated.line_keys if line > saved.completed_through_line
    )
    assert resumed_client.sent_keys(0)[0] == generated.line_keys[first_valid_after]
    sent_in_resumed_run = sum(len(requests) for requests in resumed_client.requests)
    assert sent_in_resumed_run == report.rows_written - saved.counts.rows_written
    # The counts cover both runs and add up.
    assert report.resumed_after_line == saved.completed_through_line
    assert report.rows_read_before_resume == saved.counts.rows_read
    assert report.rows_read == generated.data_rows
    assert report.rows_rejected == len(generated.bad_lines)
    assert report.rows_written + report.duplicates_merged == generated.valid_rows
    assert report.rows_read == report.rows_written + report.rows_rejected + report.duplicates_merged
    # The table holds exactly the last row of every key.
    assert scan_items(dynamodb) == generated.expected_items
    # Every rejected row is listed once, although the crash came after some were written.
    assert read_rejects(rejects) == generated.bad_lines
    assert not checkpoint.exists()


def test_resumed_counts_match_uninterrupted_load(tmp_path: Path, dynamodb: Any) -> None:
    generated = write_interactions(tmp_path / "interactions.csv", 1200)
    create_table(dynamodb, "Reference")
    reference = load_file(generated.path, "Reference", client=dynamodb, progress=False)
    checkpoint = tmp_path / "load.checkpoint.json"

    interrupt_load(generated, dynamodb, checkpoint, fail_on_call=7)
    resumed = load(generated.path, dynamodb, checkpoint=checkpoint, resume=True)

    assert resumed.rows_read == reference.rows_read
    assert resumed.rows_written == reference.rows_written
    assert resumed.rows_rejected == reference.rows_rejected
    assert resumed.duplicates_merged == reference.duplicates_merged
    # Fewer than 20 rows were rejected before the crash, so the checkpoint carried all of them.
    assert resumed.rejections == reference.rejections
    assert scan_items(dynamodb) == scan_items(dynamodb, "Reference")


def test_resume_twice_after_two_crashes(tmp_path: Path, dynamodb: Any) -> None:
    generated = write_interactions(tmp_path / "interactions.csv", 1200)
    checkpoint = tmp_path / "load.checkpoint.json"

    first = interrupt_load(generated, dynamodb, checkpoint, fail_on_call=5)
    faulty = FaultyClient(dynamodb, fail_on_call=9, sent_before_failure=3)
    with pytest.raises(SimulatedCrash):
        load(generated.path, faulty, checkpoint=checkpoint, resume=True)
    second = read_checkpoint(checkpoint)
    report = load(generated.path, dynamodb, checkpoint=checkpoint, resume=True)

    assert second is not None
    assert second.completed_through_line > first.completed_through_line
    assert second.counts.rows_written == first.counts.rows_written + 8 * 25
    assert report.resumed_after_line == second.completed_through_line
    assert report.rows_read == generated.data_rows
    assert report.rows_read == report.rows_written + report.rows_rejected + report.duplicates_merged
    assert scan_items(dynamodb) == generated.expected_items


def test_checkpoint_saved_after_each_batch(tmp_path: Path, dynamodb: Any) -> None:
    generated = write_interactions(tmp_path / "interactions.csv", 300)
    checkpoint = tmp_path / "load.checkpoint.json"

    saved = interrupt_load(generated, dynamodb, checkpoint, fail_on_call=4, sent_before_failure=0)

    assert saved.counts.rows_written == 3 * 25
    handled = (
        saved.counts.rows_written + saved.counts.rows_rejected + saved.counts.duplicates_merged
    )
    assert saved.counts.rows_read == handled
    # Lines 2 .. completed_through_line are exactly the rows the counts cover.
    assert saved.counts.rows_read == saved.completed_through_line - 1
    assert saved.table_name == TABLE
    assert saved.file_format == "csv"
    assert saved.fingerprint.size_bytes == generated.path.stat().st_size


def test_fresh_run_ignores_checkpoint(tmp_path: Path, dynamodb: Any) -> None:
    generated = write_interactions(tmp_path / "interactions.csv", 600)
    checkpoint = tmp_path / "load.checkpoint.json"
    interrupt_load(generated, dynamodb, checkpoint, fail_on_call=10)
    recording = FaultyClient(dynamodb)

    report = load(generated.path, recording, checkpoint=checkpoint)

    assert report.resumed_after_line == 0
    assert recording.sent_keys(0)[0] == generated.line_keys[2]
    assert report.rows_read == generated.data_rows
    assert scan_items(dynamodb) == generated.expected_items
    assert not checkpoint.exists()


def test_resume_without_checkpoint_loads_all(tmp_path: Path, dynamodb: Any) -> None:
    generated = write_interactions(tmp_path / "interactions.csv", 200)
    checkpoint = tmp_path / "never-written.json"

    report = load(generated.path, dynamodb, checkpoint=checkpoint, resume=True)

    assert report.resumed_after_line == 0
    assert report.rows_read == generated.data_rows
    assert scan_items(dynamodb) == generated.expected_items


def test_completed_load_deletes_checkpoint(tmp_path: Path, dynamodb: Any) -> None:
    generated = write_interactions(tmp_path / "interactions.csv", 200)
    checkpoint = tmp_path / "load.checkpoint.json"

    load(generated.path, dynamodb, checkpoint=checkpoint)

    assert not checkpoint.exists()
    assert not checkpoint.with_name(checkpoint.name + ".tmp").exists()


# --- Resume refused --------------------------------------------------------------------


def test_resume_refuses_appended_file(tmp_path: Path, dynamodb: Any) -> None:
    generated = write_interactions(tmp_path / "interactions.csv", 600)
    checkpoint = tmp_path / "load.checkpoint.json"
    interrupt_load(generated, dynamodb, checkpoint, fail_on_call=10)
    stored = scan_items(dynamodb)
    with generated.path.open("a", encoding="utf-8") as output:
        output.write(f"late-user,late-item,view,{T0},\n")

    with pytest.raises(ResumeError) as raised:
        load(generated.path, dynamodb, checkpoint=checkpoint, resume=True)

    message = str(raised.value)
    assert "the input file changed since checkpoint" in message
    assert "its size is" in message
    assert "Rerun without --resume" in message
    assert scan_items(dynamodb) == stored
    assert checkpoint.exists()


def test_resume_refuses_same_size_edit(tmp_path: Path, dynamodb: Any) -> None:
    generated = write_interactions(tmp_path / "interactions.csv", 600)
    checkpoint = tmp_path / "load.checkpoint.json"
    interrupt_load(generated, dynamodb, checkpoint, fail_on_call=10)
    content = generated.path.read_bytes()
    edited = content.replace(b"user-5,item-5,", b"user-6,item-5,", 1)
    assert edited != content
    generated.path.write_bytes(edited)

    with pytest.raises(ResumeError) as raised:
        load(generated.path, dynamodb, checkpoint=checkpoint, resume=True)

    assert "its SHA-256 differs, at the same size" in str(raised.value)


def test_resume_refuses_other_table(tmp_path: Path, dynamodb: Any) -> None:
    generated = write_interactions(tmp_path / "interactions.csv", 600)
    checkpoint = tmp_path / "load.checkpoint.json"
    interrupt_load(generated, dynamodb, checkpoint, fail_on_call=10)
    create_table(dynamodb, "OtherTable")

    with pytest.raises(ResumeError) as raised:
        load_file(
            generated.path,
            "OtherTable",
            client=dynamodb,
            progress=False,
            checkpoint=checkpoint,
            resume=True,
        )

    assert "was saved for table 'UserInteractions', but this run uses 'OtherTable'" in str(
        raised.value
    )
    assert scan_items(dynamodb, "OtherTable") == {}


def test_resume_refuses_corrupt_checkpoint(tmp_path: Path, dynamodb: Any) -> None:
    generated = write_interactions(tmp_path / "interactions.csv", 100)
    checkpoint = tmp_path / "load.checkpoint.json"
    checkpoint.write_text('{"version": 1, "input_path": ', encoding="utf-8")

    with pytest.raises(ResumeError) as raised:
        load(generated.path, dynamodb, checkpoint=checkpoint, resume=True)

    assert f"checkpoint {checkpoint} is not valid JSON" in str(raised.value)
    assert scan_items(dynamodb) == {}


def test_resume_refuses_incomplete_checkpoint(tmp_path: Path, dynamodb: Any) -> None:
    generated = write_interactions(tmp_path / "interactions.csv", 100)
    checkpoint = tmp_path / "load.checkpoint.json"
    checkpoint.write_text('{"version": 1, "input_path": "x"}', encoding="utf-8")

    with pytest.raises(ResumeError) as raised:
        load(generated.path, dynamodb, checkpoint=checkpoint, resume=True)

    assert "is incomplete or invalid (KeyError" in str(raised.value)


def test_resume_needs_checkpoint_path(tmp_path: Path, dynamodb: Any) -> None:
    generated = write_interactions(tmp_path / "interactions.csv", 10)

    with pytest.raises(ResumeError):
        load(generated.path, dynamodb, resume=True)


# --- Verification ----------------------------------------------------------------------


def test_verify_counts_every_valid_row(tmp_path: Path, dynamodb: Any) -> None:
    generated = write_interactions(tmp_path / "interactions.csv", 450)
    load(generated.path, dynamodb)

    verified = verify_load(generated.path, TABLE, client=dynamodb)

    assert verified.rows_checked == generated.valid_rows
    assert verified.keys_missing == 0
    assert verified.missing == []
    # Up to 100 distinct keys per BatchGetItem call.
    assert verified.batch_get_calls == -(-verified.keys_requested // 100)
    assert len(generated.expected_items) <= verified.keys_requested <= generated.valid_rows


def test_verify_finds_deleted_item(tmp_path: Path, dynamodb: Any) -> None:
    generated = write_interactions(tmp_path / "interactions.csv", 300)
    load(generated.path, dynamodb)
    line = 150
    user_id, item_id = generated.line_keys[line]
    dynamodb.delete_item(
        TableName=TABLE, Key={"user_id": {"S": user_id}, "item_id": {"S": item_id}}
    )

    verified = verify_load(generated.path, TABLE, client=dynamodb)

    assert verified.keys_missing == 1
    assert verified.missing == [(line, user_id, item_id)]


def test_verify_retries_unprocessed_keys(tmp_path: Path, dynamodb: Any) -> None:
    generated = write_interactions(tmp_path / "interactions.csv", 150)
    load(generated.path, dynamodb)
    flaky = UnprocessedKeysClient(dynamodb, held=30, held_calls=1)

    verified = verify_load(
        generated.path, TABLE, client=flaky, retry=FAST_RETRY, sleep=lambda seconds: None
    )

    assert verified.keys_missing == 0
    # Two requests of keys, the first needing one retry.
    assert verified.batch_get_calls == 3
    assert flaky.calls == 3


def test_verify_gives_up_on_unprocessed_keys(tmp_path: Path, dynamodb: Any) -> None:
    generated = write_interactions(tmp_path / "interactions.csv", 50)
    load(generated.path, dynamodb)
    stuck = UnprocessedKeysClient(dynamodb, held=5, held_calls=None)

    with pytest.raises(VerificationError) as raised:
        verify_load(generated.path, TABLE, client=stuck, retry=FAST_RETRY, sleep=lambda s: None)

    assert "5 keys stayed in UnprocessedKeys after 4 BatchGetItem attempts" in str(raised.value)
    assert isinstance(raised.value, LoaderError)


# --- Command line ----------------------------------------------------------------------


def test_main_interrupt_then_resume_and_verify(
    tmp_path: Path,
    dynamodb: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    generated = write_interactions(tmp_path / "interactions.csv", 800)
    checkpoint = tmp_path / "cli.checkpoint.json"
    arguments = [str(generated.path), "--no-progress", "--checkpoint", str(checkpoint)]
    faulty = FaultyClient(dynamodb, fail_on_call=12, failure=KeyboardInterrupt())
    monkeypatch.setattr("tools.loader.create_client", lambda *args: faulty)

    interrupted_code = main(arguments)
    interrupted = capsys.readouterr()
    saved = read_checkpoint(checkpoint)
    monkeypatch.setattr("tools.loader.create_client", lambda *args: dynamodb)
    resumed_code = main([*arguments, "--resume", "--verify"])
    resumed = capsys.readouterr()

    assert saved is not None
    assert interrupted_code == 130
    assert f"every row through line {saved.completed_through_line} is done" in interrupted.err
    assert "rerun the same command with --resume" in interrupted.err
    assert resumed_code == 0
    output = resumed.out.splitlines()
    assert output[1] == (
        f"  resumed after line {saved.completed_through_line}: the counts include the"
        f" {saved.counts.rows_read} rows read by earlier runs"
    )
    assert output[2] == f"  rows read:          {generated.data_rows}"
    assert output[4] == f"  rows rejected:      {len(generated.bad_lines)}"
    assert "(every row read is accounted for)" in output[6]
    assert f"{generated.valid_rows} valid rows" in resumed.out
    assert "BatchGetItem calls, 0 missing" in resumed.out
    assert scan_items(dynamodb) == generated.expected_items


def test_main_resume_modified_file_exits_1(
    tmp_path: Path,
    dynamodb: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    generated = write_interactions(tmp_path / "interactions.csv", 600)
    checkpoint = tmp_path / "cli.checkpoint.json"
    interrupt_load(generated, dynamodb, checkpoint, fail_on_call=10)
    generated.path.write_text(generated.path.read_text() + f"u,i,view,{T0},\n")
    monkeypatch.setattr("tools.loader.create_client", lambda *args: dynamodb)

    exit_code = main(
        [str(generated.path), "--no-progress", "--checkpoint", str(checkpoint), "--resume"]
    )

    captured = capsys.readouterr()
    assert exit_code == 1
    assert captured.err.startswith(f"error: the input file changed since checkpoint {checkpoint}")
    assert "--resume to continue" not in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_main_verify_missing_exits_1(
    tmp_path: Path,
    dynamodb: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    generated = write_interactions(tmp_path / "interactions.csv", 100)
    monkeypatch.setattr("tools.loader.create_client", lambda *args: dynamodb)
    real_batch_write = dynamodb.batch_write_item
    dropped: list[Key] = []

    def drop_first_put(RequestItems: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # A put that DynamoDB acknowledges but that never lands, so only --verify sees it.
        ((table, requests),) = RequestItems.items()
        if not dropped:
            first = requests[0]["PutRequest"]["Item"]
            dropped.append((first["user_id"]["S"], first["item_id"]["S"]))
            requests = requests[1:]
        return real_batch_write(RequestItems={table: requests}, **kwargs)

    monkeypatch.setattr(dynamodb, "batch_write_item", drop_first_put)

    exit_code = main([str(generated.path), "--no-progress", "--no-checkpoint", "--verify"])

    captured = capsys.readouterr()
    assert exit_code == 1
    assert "BatchGetItem calls, 1 missing" in captured.out
    assert f"line 2: user_id {dropped[0][0]!r}, item_id {dropped[0][1]!r}" in captured.out
    assert "error: 1 keys of" in captured.err


def test_main_resume_with_no_checkpoint_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        main([str(tmp_path / "a.csv"), "--resume", "--no-checkpoint"])

    assert raised.value.code == 2
    assert "--resume needs a checkpoint" in capsys.readouterr().err


# --- Real process killed with SIGKILL, against dynalite ----------------------------------


def _wait_for_progress(process: subprocess.Popen[bytes], checkpoint: Path, line: int) -> Checkpoint:
    """Wait until the checkpoint records `line` or later; fail if the loader ends first."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the loader exited with {process.returncode} before it could be killed")
        saved = read_checkpoint(checkpoint)
        if saved is not None and saved.completed_through_line >= line:
            return saved
        time.sleep(0.05)
    pytest.fail(f"the checkpoint did not reach line {line} within 120 s")


@pytest.mark.http
def test_sigkill_then_resume_on_dynalite(tmp_path: Path, dynalite_endpoint: str) -> None:
    client = local_client(dynalite_endpoint)
    table = f"loader-resume-{uuid.uuid4().hex[:8]}"
    create_table(client, table)
    generated = write_interactions(tmp_path / "interactions.csv", 12_000)
    checkpoint = tmp_path / "kill.checkpoint.json"
    rejects = tmp_path / "rejects.csv"
    command = [
        sys.executable,
        "-m",
        "tools.loader",
        str(generated.path),
        "--endpoint-url",
        dynalite_endpoint,
        "--table",
        table,
        "--checkpoint",
        str(checkpoint),
        "--rejects-file",
        str(rejects),
        "--no-progress",
        # A save after every batch lets the test kill the loader soon after line 2000,
        # long before it could finish on a fast machine.
        "--checkpoint-interval",
        "0",
    ]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _wait_for_progress(process, checkpoint, 2_000)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        killed_at = read_checkpoint(checkpoint)
        stored_after_kill = scan_items(client, table)

        resumed = subprocess.run(
            [*command, "--resume", "--verify"],
            check=False,
            cwd=REPO_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )

        assert process.returncode == -signal.SIGKILL
        assert killed_at is not None
        assert 2_000 <= killed_at.completed_through_line < generated.data_rows + 1
        assert 0 < len(stored_after_kill) < len(generated.expected_items)
        assert resumed.returncode == 0, resumed.stderr
        assert f"  resumed after line {killed_at.completed_through_line}:" in resumed.stdout
        assert f"  rows read:          {generated.data_rows}\n" in resumed.stdout
        assert f"  rows rejected:      {len(generated.bad_lines)}\n" in resumed.stdout
        assert "(every row read is accounted for)" in resumed.stdout
        assert f"{generated.valid_rows} valid rows" in resumed.stdout
        assert "BatchGetItem calls, 0 missing" in resumed.stdout
        assert scan_items(client, table) == generated.expected_items
        assert read_rejects(rejects) == generated.bad_lines
        assert not checkpoint.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        client.delete_table(TableName=table)


def test_resume_lists_each_rejection_once(tmp_path: Path, dynamodb: Any) -> None:
    # Lines 2-26 fill batch 1, line 27 is rejected, lines 28-52 fill batch 2. The crash
    # comes on batch 2, after line 27 went to the rejects file but before the checkpoint
    # moved past it, so the resumed run reads line 27 again.
    valid = [f"u{n},i{n},view,{T0 + n},\n" for n in range(50)]
    path = tmp_path / "interactions.csv"
    path.write_text(CSV_HEADER + "".join(valid[:25]) + "u,i,view,never,\n" + "".join(valid[25:]))
    checkpoint = tmp_path / "load.checkpoint.json"
    rejects = tmp_path / "rejects.csv"
    faulty = FaultyClient(dynamodb, fail_on_call=2)
    with pytest.raises(SimulatedCrash):
        load(path, faulty, checkpoint=checkpoint, rejects_file=rejects)
    saved = read_checkpoint(checkpoint)
    rejected_before_resume = read_rejects(rejects)

    report = load(path, dynamodb, checkpoint=checkpoint, resume=True, rejects_file=rejects)

    assert saved is not None
    assert saved.completed_through_line == 26
    assert rejected_before_resume == [27]
    assert read_rejects(rejects) == [27]
    assert report.rows_rejected == 1
    assert report.rejections == [(27, report.rejections[0][1])]
    assert report.rejections[0][1].startswith("timestamp 'never'")
    assert report.rows_written == 50
    assert len(scan_items(dynamodb)) == 50


class CheckpointWatchingClient:
    """Wraps a boto3 client and reads the checkpoint before each BatchWriteItem call."""

    def __init__(self, client: Any, checkpoint: Path) -> None:
        self._client = client
        self._checkpoint = checkpoint
        # completed_through_line before each call, None while there is no checkpoint.
        self.lines_seen: list[int | None] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def batch_write_item(self, RequestItems: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        saved = read_checkpoint(self._checkpoint)
        self.lines_seen.append(None if saved is None else saved.completed_through_line)
        return self._client.batch_write_item(RequestItems=RequestItems, **kwargs)


def test_interval_zero_saves_every_batch(tmp_path: Path, dynamodb: Any) -> None:
    # 100 valid rows without repeats: batches end on lines 26, 51, 76 and 101.
    path = tmp_path / "interactions.csv"
    path.write_text(CSV_HEADER + "".join(f"u{n},i{n},view,{T0 + n},\n" for n in range(100)))
    checkpoint = tmp_path / "load.checkpoint.json"
    watching = CheckpointWatchingClient(dynamodb, checkpoint)

    load(path, watching, checkpoint=checkpoint, checkpoint_interval_seconds=0)

    assert watching.lines_seen == [None, 26, 51, 76]


def test_long_interval_saves_first_batch_only(tmp_path: Path, dynamodb: Any) -> None:
    path = tmp_path / "interactions.csv"
    path.write_text(CSV_HEADER + "".join(f"u{n},i{n},view,{T0 + n},\n" for n in range(100)))
    checkpoint = tmp_path / "load.checkpoint.json"
    watching = CheckpointWatchingClient(dynamodb, checkpoint)

    load(path, watching, checkpoint=checkpoint, checkpoint_interval_seconds=3600)

    assert watching.lines_seen == [None, 26, 26, 26]


def test_crash_saves_last_batch_despite_interval(tmp_path: Path, dynamodb: Any) -> None:
    path = tmp_path / "interactions.csv"
    path.write_text(CSV_HEADER + "".join(f"u{n},i{n},view,{T0 + n},\n" for n in range(100)))
    checkpoint = tmp_path / "load.checkpoint.json"
    faulty = FaultyClient(dynamodb, fail_on_call=4)

    with pytest.raises(SimulatedCrash):
        load(path, faulty, checkpoint=checkpoint, checkpoint_interval_seconds=3600)

    saved = read_checkpoint(checkpoint)
    assert saved is not None
    assert saved.completed_through_line == 76
    assert saved.counts.rows_written == 75
