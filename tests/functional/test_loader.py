"""Functional tests of the interaction loader (tools/loader.py).

Most tests run against moto's in-process DynamoDB; one runs the command
against a real dynalite server on 127.0.0.1. Tables are created from the
UserInteractionsTable definition in template.yaml.
"""

from __future__ import annotations

import csv
import itertools
import json
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer
from botocore.config import Config
from botocore.exceptions import BotoCoreError
from moto import mock_aws

from tools import loader
from tools.interaction_formats import (
    READERS,
    RowError,
    detect_format,
    parse_timestamp,
    parse_weight,
)
from tools.loader import (
    BatchWriter,
    DynamoDBWriteError,
    InputFileError,
    LoadReport,
    RetryPolicy,
    TableNotFoundError,
    UnprocessedItemsError,
    load_file,
    main,
)
from tools.template_table import create_table

TABLE = "UserInteractions"
REGION = "us-east-1"
REPO_ROOT = Path(__file__).resolve().parents[2]
DYNALITE = REPO_ROOT / "node_modules" / ".bin" / "dynalite"

# Retries without real waiting, so the retry tests stay fast.
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay_seconds=0.001, max_delay_seconds=0.002)

CSV_HEADER = "user_id,item_id,interaction_type,timestamp,weight\n"

# 2023-11-14T22:13:20Z is epoch second 1_700_000_000.
T0 = 1_700_000_000


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials and region, and no endpoint or table overrides from the shell."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE", "TABLE_NAME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    """A moto DynamoDB client with the UserInteractions table from template.yaml."""
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        create_table(client, TABLE)
        yield client


def write_text(directory: Path, name: str, content: str) -> Path:
    path = directory / name
    path.write_text(content, encoding="utf-8", newline="")
    return path


def scan_items(client: Any, table: str = TABLE) -> dict[tuple[str, str], dict[str, Any]]:
    """Return every item of the table as plain Python values, keyed by (user_id, item_id)."""
    deserializer = TypeDeserializer()
    items: dict[tuple[str, str], dict[str, Any]] = {}
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for raw in page["Items"]:
            item = {name: deserializer.deserialize(value) for name, value in raw.items()}
            items[(item["user_id"], item["item_id"])] = item
    return items


def item(
    user_id: str,
    item_id: str,
    interaction_type: str,
    timestamp: int,
    weight: str | None = None,
) -> dict[str, Any]:
    expected: dict[str, Any] = {
        "user_id": user_id,
        "item_id": item_id,
        "interaction_type": interaction_type,
        "timestamp": Decimal(timestamp),
    }
    if weight is not None:
        expected["weight"] = Decimal(weight)
    return expected


def load(path: Path, client: Any, **options: Any) -> LoadReport:
    options.setdefault("progress", False)
    options.setdefault("retry", FAST_RETRY)
    return load_file(path, TABLE, client=client, **options)


class RecordingClient:
    """Wraps a boto3 client, records each BatchWriteItem request and can hold items back.

    `hold_back(call_number, requests)` returns how many requests at the end of
    that call to return as UnprocessedItems instead of sending them.
    """

    def __init__(self, client: Any, hold_back: Any = None) -> None:
        self._client = client
        self._hold_back = hold_back or (lambda call_number, requests: 0)
        self.requests: list[list[dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def batch_write_item(self, RequestItems: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        ((table, requests),) = RequestItems.items()
        self.requests.append(requests)
        held = self._hold_back(len(self.requests), requests)
        sent = requests[: len(requests) - held]
        unprocessed = requests[len(requests) - held :]
        response: dict[str, Any] = {"UnprocessedItems": {}}
        if sent:
            response = self._client.batch_write_item(RequestItems={table: sent}, **kwargs)
        if unprocessed:
            response["UnprocessedItems"] = {table: unprocessed}
        return response

    def request_keys(self, call_index: int) -> list[tuple[str, str]]:
        return [
            (
                request["PutRequest"]["Item"]["user_id"]["S"],
                request["PutRequest"]["Item"]["item_id"]["S"],
            )
            for request in self.requests[call_index]
        ]


# --- Formats -------------------------------------------------------------------


def test_csv_rows_stored(tmp_path: Path, dynamodb: Any) -> None:
    path = write_text(
        tmp_path,
        "interactions.csv",
        CSV_HEADER
        + f"u1,i1,view,{T0},\n"
        + f"u1,i2,purchase,{T0 + 5},2.5\n"
        + f"u2,i1,like,{T0 + 9},-1\n",
    )

    report = load(path, dynamodb)

    assert report.file_format == "csv"
    assert report.rows_read == 3
    assert report.rows_written == 3
    assert report.rows_rejected == 0
    assert scan_items(dynamodb) == {
        ("u1", "i1"): item("u1", "i1", "view", T0),
        ("u1", "i2"): item("u1", "i2", "purchase", T0 + 5, "2.5"),
        ("u2", "i1"): item("u2", "i1", "like", T0 + 9, "-1"),
    }


def test_csv_without_weight_column(tmp_path: Path, dynamodb: Any) -> None:
    path = write_text(
        tmp_path,
        "interactions.csv",
        f"timestamp,item_id,source,user_id,interaction_type\n{T0},i9,web,u9,view\n",
    )

    report = load(path, dynamodb)

    assert report.rows_written == 1
    assert scan_items(dynamodb) == {("u9", "i9"): item("u9", "i9", "view", T0)}


def test_jsonl_rows_stored(tmp_path: Path, dynamodb: Any) -> None:
    lines = [
        {"user_id": "u1", "item_id": "i1", "interaction_type": "view", "timestamp": T0},
        {
            "user_id": "u1",
            "item_id": "i2",
            "interaction_type": "rating",
            "timestamp": "2023-11-14T22:13:20Z",
            "weight": 4.5,
            "note": "ignored",
        },
        {
            "user_id": "u2",
            "item_id": "i1",
            "interaction_type": "view",
            "timestamp": float(T0 + 1),
            "weight": None,
        },
    ]
    path = write_text(
        tmp_path, "events.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n\n"
    )

    report = load(path, dynamodb)

    assert report.file_format == "jsonl"
    assert report.rows_read == 3
    assert report.rows_written == 3
    assert scan_items(dynamodb) == {
        ("u1", "i1"): item("u1", "i1", "view", T0),
        ("u1", "i2"): item("u1", "i2", "rating", T0, "4.5"),
        ("u2", "i1"): item("u2", "i1", "view", T0 + 1),
    }


def test_movielens_ratings_stored(tmp_path: Path, dynamodb: Any) -> None:
    path = write_text(
        tmp_path,
        "ratings.csv",
        "userId,movieId,rating,timestamp\r\n"
        "1,31,2.5,1260759144\r\n"
        "1,1029,3.0,1260759179\r\n"
        "7,31,5,851866703\r\n",
    )

    report = load(path, dynamodb)

    assert report.file_format == "movielens"
    assert report.rows_written == 3
    assert scan_items(dynamodb) == {
        ("1", "31"): item("1", "31", "rating", 1260759144, "2.5"),
        ("1", "1029"): item("1", "1029", "rating", 1260759179, "3.0"),
        ("7", "31"): item("7", "31", "rating", 851866703, "5"),
    }


def test_udata_rows_stored(tmp_path: Path, dynamodb: Any) -> None:
    path = write_text(
        tmp_path,
        "u.data",
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n",
    )

    report = load(path, dynamodb)

    assert report.file_format == "udata"
    assert report.rows_written == 3
    assert scan_items(dynamodb) == {
        ("196", "242"): item("196", "242", "rating", 881250949, "3"),
        ("186", "302"): item("186", "302", "rating", 891717742, "3"),
        ("22", "377"): item("22", "377", "rating", 878887116, "1"),
    }


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("events.jsonl", '{"user_id": "u"}\n', "jsonl"),
        ("events.json", "not even json\n", "jsonl"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,4\n", "movielens"),
        ("u.data", "196\t242\t3\t881250949\n", "udata"),
        ("ratings.txt", "\n\n1\t2\t4.5\t100\n", "udata"),
        ("interactions.csv", CSV_HEADER + "u,i,view,1,\n", "csv"),
        ("interactions.txt", "\ufeffitem_id, user_id ,interaction_type,timestamp\n", "csv"),
        ("events.log", '{"user_id": "u"}\n', "jsonl"),
    ],
)
def test_auto_detection(tmp_path: Path, name: str, content: str, expected: str) -> None:
    path = write_text(tmp_path, name, content)

    assert detect_format(path) == expected


@pytest.mark.parametrize(
    ("content", "expected_message"),
    [
        ("a,b,c\n1,2,3\n", "cannot detect the format"),
        ("1\t2\t3\n", "cannot detect the format"),
        ("userid,movieid,rating,timestamp\n", "cannot detect the format"),
        ("", "is empty"),
        ("\n  \n", "is empty"),
    ],
)
def test_auto_detection_failure_is_clear(
    tmp_path: Path, dynamodb: Any, content: str, expected_message: str
) -> None:
    path = write_text(tmp_path, "data.csv", content)

    with pytest.raises(InputFileError) as raised:
        load(path, dynamodb)

    assert expected_message in str(raised.value)
    assert str(path) in str(raised.value)


def test_explicit_format_overrides_detection(tmp_path: Path, dynamodb: Any) -> None:
    # A JSON Lines file named .csv loads when its format is given.
    path = write_text(
        tmp_path,
        "events.csv",
        json.dumps({"user_id": "u", "item_id": "i", "interaction_type": "view", "timestamp": T0})
        + "\n",
    )

    report = load(path, dynamodb, file_format="jsonl")

    assert report.rows_written == 1
    assert scan_items(dynamodb) == {("u", "i"): item("u", "i", "view", T0)}


def test_wrong_movielens_header_is_fatal(tmp_path: Path, dynamodb: Any) -> None:
    path = write_text(tmp_path, "interactions.csv", CSV_HEADER + "u,i,view,1,\n")

    with pytest.raises(InputFileError) as raised:
        load(path, dynamodb, file_format="movielens")

    assert "userId,movieId,rating,timestamp" in str(raised.value)


def test_csv_header_missing_column_is_fatal(tmp_path: Path, dynamodb: Any) -> None:
    path = write_text(tmp_path, "interactions.csv", "user_id,item_id,timestamp\nu,i,1\n")

    with pytest.raises(InputFileError) as raised:
        load(path, dynamodb, file_format="csv")

    assert "lacks column(s) interaction_type" in str(raised.value)


# --- Validation and rejections ---------------------------------------------------


def test_csv_rejection_lines_and_reasons(tmp_path: Path, dynamodb: Any) -> None:
    max_user = "u" * 2048
    max_item = "é" * 512  # 1024 bytes of UTF-8
    rows = [
        (f"good,i1,view,{T0},1", None),
        (f",i1,view,{T0},", "user_id is missing or empty"),
        (f"u1,,view,{T0},", "item_id is missing or empty"),
        (f"{'u' * 2049},i1,view,{T0},", "2049 bytes of UTF-8, over the DynamoDB key limit of 2048"),
        (f"u1,{'é' * 513},view,{T0},", "1026 bytes of UTF-8, over the DynamoDB key limit of 1024"),
        ("u1,i1,view,-5,", "timestamp '-5' is negative"),
        ("u1,i1,view,nan,", "timestamp 'nan' is not a finite number"),
        ("u1,i1,view,-Infinity,", "timestamp '-Infinity' is not a finite number"),
        ("u1,i1,view,soon,", "timestamp 'soon' is neither integer epoch seconds nor an ISO-8601"),
        (f"u1,i1,view,{T0}.5,", "has a fractional part"),
        ("u1,i1,view,2023-11-14T22:13:20,", "has no timezone"),
        (f"u1,i1,view,{T0 * 1000},", "is after the year 9999"),
        ("u1,i1,view,,", "timestamp is missing or empty"),
        (f"u1,i1,view,{T0},heavy", "weight 'heavy' is not a number"),
        (f"u1,i1,view,{T0},NaN", "weight 'NaN' is not a finite number"),
        (f"u1,i1,view,{T0},1e999", "weight '1e999' is outside the DynamoDB number range"),
        (f"u1,i1,,{T0},", "interaction_type is missing or empty"),
        (f"u1,i1,   ,{T0},", "interaction_type '   ' contains only whitespace"),
        (f" ,i1,view,{T0},", "user_id ' ' contains only whitespace"),
        ("u1,i1,view", "expected 5 fields, found 3"),
        (f"u1,i1,view,{T0},1,extra", "expected 5 fields, found 6"),
        (f"{max_user},{max_item},view,{T0},", None),
        (f'"multi\nline user",i1,view,{T0},', None),
        ("u1,i1,view,2023-11-14,", "neither integer epoch seconds nor an ISO-8601"),
    ]
    path = write_text(tmp_path, "interactions.csv", CSV_HEADER + "\n".join(r for r, _ in rows))
    # The header is line 1 and the quoted line break makes one record span two lines.
    expected: dict[int, str] = {}
    line_number = 2
    for text, reason in rows:
        if reason is not None:
            expected[line_number] = reason
        line_number += text.count("\n") + 1

    report = load(path, dynamodb)

    assert report.rows_read == len(rows)
    assert report.rows_rejected == len(expected)
    assert report.rows_written == 3
    rejected = dict(report.rejections)
    assert sorted(rejected) == sorted(expected)
    for line, reason in expected.items():
        assert reason in rejected[line], f"line {line}: {rejected[line]!r}"
    assert set(scan_items(dynamodb)) == {
        ("good", "i1"),
        (max_user, max_item),
        ("multi\nline user", "i1"),
    }


def test_jsonl_rejection_lines_and_reasons(tmp_path: Path, dynamodb: Any) -> None:
    good = {"user_id": "u1", "item_id": "i1", "interaction_type": "view", "timestamp": T0}
    lines = [
        (json.dumps(good), None),
        ("", None),  # blank line: skipped, not a row
        ('{"user_id": "u1", ', "invalid JSON"),
        ("[1, 2]", "expected a JSON object, found an array"),
        ("42", "expected a JSON object, found a number"),
        ('"text"', "expected a JSON object, found a string"),
        (json.dumps({**good, "user_id": 7}), "user_id must be a string, got int 7"),
        (
            json.dumps({k: v for k, v in good.items() if k != "interaction_type"}),
            "interaction_type is missing or empty",
        ),
        (json.dumps({**good, "interaction_type": ""}), "interaction_type is missing or empty"),
        (json.dumps({**good, "timestamp": True}), "got boolean True"),
        (json.dumps({**good, "timestamp": T0 + 0.25}), "has a fractional part"),
        (json.dumps({**good, "weight": float("nan")}), "weight nan is not a finite number"),
        (json.dumps({**good, "weight": "x"}), "weight 'x' is not a number"),
        (json.dumps({**good, "weight": [1]}), "weight must be a number, got list"),
        (json.dumps({**good, "item_id": "i2", "timestamp": f"{T0}.0"}), None),
    ]
    path = write_text(tmp_path, "events.jsonl", "\n".join(text for text, _ in lines) + "\n")

    report = load(path, dynamodb)

    expected = {number: reason for number, (_, reason) in enumerate(lines, 1) if reason}
    assert report.rows_read == len(lines) - 1
    assert report.rows_rejected == len(expected)
    rejected = dict(report.rejections)
    assert sorted(rejected) == sorted(expected)
    for line, reason in expected.items():
        assert reason in rejected[line], f"line {line}: {rejected[line]!r}"
    assert scan_items(dynamodb) == {
        ("u1", "i1"): item("u1", "i1", "view", T0),
        ("u1", "i2"): item("u1", "i2", "view", T0),
    }


def test_movielens_rejections(tmp_path: Path, dynamodb: Any) -> None:
    path = write_text(
        tmp_path,
        "ratings.csv",
        "userId,movieId,rating,timestamp\n"
        "1,31,2.5,1260759144\n"
        "1,32,2.5\n"
        "1,33,,1260759144\n"
        "1,34,good,1260759144\n"
        "1,35,4,yesterday\n",
    )

    report = load(path, dynamodb)

    rejected = dict(report.rejections)
    assert report.rows_written == 1
    assert sorted(rejected) == [3, 4, 5, 6]
    assert "expected 4 fields, found 3" in rejected[3]
    assert "rating is missing or empty" in rejected[4]
    assert "rating 'good' is not a number" in rejected[5]
    assert "timestamp 'yesterday'" in rejected[6]


def test_udata_rejections(tmp_path: Path, dynamodb: Any) -> None:
    path = write_text(
        tmp_path, "u.data", "196\t242\t3\t881250949\n196 243 3 881250949\n196\t244\tx\t881250949\n"
    )

    report = load(path, dynamodb)

    rejected = dict(report.rejections)
    assert report.rows_written == 1
    assert sorted(rejected) == [2, 3]
    assert "expected 4 tab-separated fields, found 1" in rejected[2]
    assert "rating 'x' is not a number" in rejected[3]


def test_invalid_utf8_row_rejected_alone(tmp_path: Path, dynamodb: Any) -> None:
    path = tmp_path / "interactions.csv"
    path.write_bytes(CSV_HEADER.encode() + b"u\xff1,i1,view,1,\n" + f"u2,i1,view,{T0},\n".encode())

    report = load(path, dynamodb)

    assert report.rejections == [
        (2, "user_id 'u\\udcff1' is not valid UTF-8; re-encode the file as UTF-8")
    ]
    assert set(scan_items(dynamodb)) == {("u2", "i1")}


def test_oversized_csv_field_rejected(tmp_path: Path, dynamodb: Any) -> None:
    huge = "x" * 200_000  # over the csv module's default field size limit
    path = write_text(
        tmp_path, "interactions.csv", CSV_HEADER + f'u1,i1,"{huge}",1,\nu2,i2,view,{T0},\n'
    )

    report = load(path, dynamodb)

    rejected = dict(report.rejections)
    assert sorted(rejected) == [2]
    assert "unreadable CSV record" in rejected[2]
    assert set(scan_items(dynamodb)) == {("u2", "i2")}


def test_item_over_400kb_rejected(tmp_path: Path, dynamodb: Any) -> None:
    too_long_type = "😀" * 102_400  # 409,600 bytes of UTF-8
    lines = [
        {"user_id": "u1", "item_id": "i1", "interaction_type": too_long_type, "timestamp": T0},
        {"user_id": "u1", "item_id": "i2", "interaction_type": "view", "timestamp": T0},
    ]
    path = write_text(tmp_path, "events.jsonl", "\n".join(json.dumps(line) for line in lines))

    report = load(path, dynamodb)

    rejected = dict(report.rejections)
    assert sorted(rejected) == [1]
    assert "over the 409600-byte item size limit" in rejected[1]
    assert set(scan_items(dynamodb)) == {("u1", "i2")}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (T0, T0),
        (str(T0), T0),
        (f" {T0} ", T0),
        (f"{T0}.0", T0),
        (f"{T0}.000", T0),
        ("1.7e9", 1_700_000_000),
        (float(T0), T0),
        (Decimal(f"{T0}.0"), T0),
        ("0", 0),
        ("2023-11-14T22:13:20Z", T0),
        ("2023-11-14T22:13:20+00:00", T0),
        ("2023-11-15T00:13:20+02:00", T0),
        ("2023-11-14 17:13:20-05:00", T0),
        ("2023-11-14T22:13:20.999Z", T0),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_timestamp_accepted_forms(value: object, expected: int) -> None:
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (-1, "is negative"),
        ("-1", "is negative"),
        ("1969-12-31T23:59:59Z", "is negative"),
        (float("inf"), "not a finite number"),
        (float("nan"), "not a finite number"),
        ("Infinity", "not a finite number"),
        ("1e999999999", "after the year 9999"),
        ("9" * 5000, "after the year 9999"),
        ("12:00", "neither integer epoch seconds"),
        ("0x10", "neither integer epoch seconds"),
        ("2023-13-01T00:00:00Z", "neither integer epoch seconds"),
        ([T0], "got list"),
    ],
)
def test_timestamp_rejected_forms(value: object, reason: str) -> None:
    with pytest.raises(RowError) as raised:
        parse_timestamp(value)

    assert reason in str(raised.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4.5", Decimal("4.5")),
        (" 3 ", Decimal(3)),
        (0.1, Decimal("0.1")),
        (2, Decimal(2)),
        ("-2.5e-3", Decimal("-0.0025")),
        ("", None),
        (None, None),
    ],
)
def test_weight_accepted_forms(value: object, expected: Decimal | None) -> None:
    assert parse_weight(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("inf", "not a finite number"),
        (float("-inf"), "not a finite number"),
        ("1_000", "is not a number"),
        ("0x1", "is not a number"),
        (True, "got boolean"),
        ("1" * 39, "39 significant digits"),
        ("1e-131", "outside the DynamoDB number range"),
    ],
)
def test_weight_rejected_forms(value: object, reason: str) -> None:
    with pytest.raises(RowError) as raised:
        parse_weight(value)

    assert reason in str(raised.value)


# --- Batches, duplicates and idempotence -------------------------------------------


def test_batches_hold_at_most_25_distinct_keys(tmp_path: Path, dynamodb: Any) -> None:
    rows = [f"u{n % 7},i{n},view,{T0 + n},\n" for n in range(60)]
    # Repeats of keys in the first and last batch.
    rows.insert(3, f"u0,i0,purchase,{T0},\n")
    rows.append(f"u{59 % 7},i59,purchase,{T0},\n")
    path = write_text(tmp_path, "interactions.csv", CSV_HEADER + "".join(rows))
    client = RecordingClient(dynamodb)

    report = load(path, client)

    assert [len(requests) for requests in client.requests] == [25, 25, 10]
    for call_index in range(len(client.requests)):
        keys = client.request_keys(call_index)
        assert len(keys) == len(set(keys)), f"call {call_index} repeats a key"
    assert report.rows_read == 62
    assert report.duplicates_merged == 2
    assert report.rows_written == 60
    assert len(scan_items(dynamodb)) == 60


def test_duplicate_key_in_batch_keeps_last(tmp_path: Path, dynamodb: Any) -> None:
    path = write_text(
        tmp_path,
        "interactions.csv",
        CSV_HEADER
        + f"u1,i1,view,{T0},\n"
        + f"u1,i2,view,{T0 + 1},\n"
        + f"u1,i1,purchase,{T0 + 2},5\n",
    )
    client = RecordingClient(dynamodb)

    report = load(path, client)

    assert report.duplicates_merged == 1
    assert report.rows_written == 2
    assert sorted(client.request_keys(0)) == [("u1", "i1"), ("u1", "i2")]
    assert scan_items(dynamodb)[("u1", "i1")] == item("u1", "i1", "purchase", T0 + 2, "5")


def test_duplicate_key_in_later_batch_overwrites(tmp_path: Path, dynamodb: Any) -> None:
    rows = [f"u1,i{n},view,{T0 + n},\n" for n in range(25)]
    rows.append(f"u1,i0,purchase,{T0 + 99},2\n")
    path = write_text(tmp_path, "interactions.csv", CSV_HEADER + "".join(rows))

    report = load(path, dynamodb)

    assert report.duplicates_merged == 0
    assert report.rows_written == 26
    assert scan_items(dynamodb)[("u1", "i0")] == item("u1", "i0", "purchase", T0 + 99, "2")


def test_rerun_is_idempotent(tmp_path: Path, dynamodb: Any) -> None:
    rows = [f"user{n % 11},item{n % 17},view,{T0 + n},{n % 5}\n" for n in range(120)]
    rows.append("bad,row\n")
    path = write_text(tmp_path, "interactions.csv", CSV_HEADER + "".join(rows))
    distinct_keys = {(f"user{n % 11}", f"item{n % 17}") for n in range(120)}

    first = load(path, dynamodb)
    after_first = scan_items(dynamodb)
    second = load(path, dynamodb)
    after_second = scan_items(dynamodb)

    assert len(after_first) == len(distinct_keys)
    assert len(after_second) == len(after_first)
    assert after_second == after_first
    assert second == first
    assert first.rows_rejected == 1
    # Each key's item contains its last row in the file (largest n for that key).
    last_n = {(f"user{n % 11}", f"item{n % 17}"): n for n in range(120)}
    for key, n in last_n.items():
        assert after_second[key]["timestamp"] == T0 + n, key


# --- UnprocessedItems retries --------------------------------------------------------


def test_unprocessed_items_are_retried(tmp_path: Path, dynamodb: Any) -> None:
    rows = [f"u{n},i{n},view,{T0 + n},\n" for n in range(30)]
    path = write_text(tmp_path, "interactions.csv", CSV_HEADER + "".join(rows))
    # The first call writes 10 of 25 rows and returns 15 as unprocessed.
    client = RecordingClient(dynamodb, hold_back=lambda call, requests: 15 if call == 1 else 0)

    report = load(path, client)

    assert [len(requests) for requests in client.requests] == [25, 15, 5]
    assert client.request_keys(1) == client.request_keys(0)[10:]
    assert report.rows_written == 30
    assert set(scan_items(dynamodb)) == {(f"u{n}", f"i{n}") for n in range(30)}


def test_unprocessed_items_left_raise_error(tmp_path: Path, dynamodb: Any) -> None:
    rows = [f"u{n},i{n},view,{T0 + n},\n" for n in range(40)]
    path = write_text(tmp_path, "interactions.csv", CSV_HEADER + "".join(rows))
    # Every call leaves its last 3 requests unprocessed.
    client = RecordingClient(dynamodb, hold_back=lambda call, requests: min(3, len(requests)))

    with pytest.raises(UnprocessedItemsError) as raised:
        load(path, client)

    error = raised.value
    assert error.unprocessed == 3
    assert error.attempts == FAST_RETRY.max_attempts
    assert error.rows_written == 22
    assert "3 rows were not written to table 'UserInteractions'" in str(error)
    assert "stopped at line 26" in str(error)
    assert len(client.requests) == FAST_RETRY.max_attempts
    assert len(scan_items(dynamodb)) == 22


def test_retry_waits_use_backoff(dynamodb: Any) -> None:
    waits: list[float] = []
    client = RecordingClient(dynamodb, hold_back=lambda call, requests: 1 if call <= 3 else 0)
    policy = RetryPolicy(max_attempts=5, base_delay_seconds=0.5, max_delay_seconds=1.5)
    writer = BatchWriter(client, TABLE, policy, sleep=waits.append, rng=random.Random(7))
    batch = [
        loader.Interaction(user_id="u", item_id=f"i{n}", interaction_type="view", timestamp=T0)
        for n in range(3)
    ]

    writer.write(batch)

    assert len(waits) == 3
    for retry_number, (wait, ceiling) in enumerate(zip(waits, [0.5, 1.0, 1.5]), 1):
        assert 0.0 <= wait <= ceiling, f"retry {retry_number} waited {wait}"
    assert len(scan_items(dynamodb)) == 3


class _UpperBoundRandom(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


def test_retry_delay_ceiling_doubles_up_to_cap() -> None:
    policy = RetryPolicy(max_attempts=8, base_delay_seconds=0.05, max_delay_seconds=0.5)

    ceilings = [policy.delay_seconds(n, _UpperBoundRandom()) for n in range(1, 7)]

    assert ceilings == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5])


def test_client_uses_standard_retry_mode() -> None:
    client = loader.create_client()

    assert client.meta.config.retries["mode"] == "standard"
    assert client.meta.config.retries["total_max_attempts"] == 5


# --- Identifiers, errors and streaming -----------------------------------------------


def test_unusual_ids_round_trip(tmp_path: Path, dynamodb: Any) -> None:
    keys = [
        ("jürgen", "Amélie (2001)"),
        ("用户-42", "商品/7"),
        ("alice@example.com", "item, with comma"),
        ("first last", 'quote "inside"'),
        (" padded ", "tab\tinside"),
        ("emoji😀", "ünïcödé"),
    ]
    path = tmp_path / "interactions.csv"
    with path.open("w", encoding="utf-8", newline="") as output:
        writer = csv.writer(output)
        writer.writerow(["user_id", "item_id", "interaction_type", "timestamp"])
        for number, (user_id, item_id) in enumerate(keys):
            writer.writerow([user_id, item_id, "view", T0 + number])

    report = load(path, dynamodb)

    assert report.rows_written == len(keys)
    for number, (user_id, item_id) in enumerate(keys):
        response = dynamodb.get_item(
            TableName=TABLE, Key={"user_id": {"S": user_id}, "item_id": {"S": item_id}}
        )
        assert "Item" in response, (user_id, item_id)
        assert response["Item"]["timestamp"] == {"N": str(T0 + number)}


def test_missing_table_error_message(tmp_path: Path, dynamodb: Any) -> None:
    path = write_text(tmp_path, "interactions.csv", CSV_HEADER + f"u,i,view,{T0},\n")

    with pytest.raises(TableNotFoundError) as raised:
        load_file(path, "Absent", client=dynamodb, progress=False)

    message = str(raised.value)
    assert "'Absent' was not found" in message
    assert dynamodb.meta.endpoint_url in message
    assert "template.yaml" in message


def test_unreachable_endpoint_error(tmp_path: Path) -> None:
    path = write_text(tmp_path, "interactions.csv", CSV_HEADER + f"u,i,view,{T0},\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{closed_port}"
    client = boto3.client(
        "dynamodb", endpoint_url=url, config=Config(retries={"total_max_attempts": 1})
    )

    with pytest.raises(DynamoDBWriteError) as raised:
        load_file(path, TABLE, client=client, progress=False)

    assert f"cannot connect to the DynamoDB endpoint {url}" in str(raised.value)


@pytest.mark.parametrize("file_format", ["csv", "jsonl", "movielens", "udata"])
def test_readers_stream_lazily(file_format: str) -> None:
    first_lines = {
        "csv": [CSV_HEADER, f"u1,i1,view,{T0},\n", f"u2,i2,view,{T0},\n"],
        "jsonl": [
            json.dumps({"user_id": u, "item_id": "i", "interaction_type": "v", "timestamp": T0})
            + "\n"
            for u in ("u1", "u2")
        ],
        "movielens": ["userId,movieId,rating,timestamp\n", "1,2,3,4\n", "5,6,7,8\n"],
        "udata": ["1\t2\t3\t4\n", "5\t6\t7\t8\n"],
    }[file_format]

    def lines() -> Iterator[str]:
        yield from first_lines
        raise AssertionError("the reader read past the rows that were requested")

    rows = list(itertools.islice(READERS[file_format](lines()), 2))  # type: ignore[arg-type]

    assert [row.line_number for row in rows] == [len(first_lines) - 1, len(first_lines)]


# --- Command line ---------------------------------------------------------------------


def test_main_prints_report(
    tmp_path: Path, dynamodb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_text(
        tmp_path,
        "interactions.csv",
        CSV_HEADER
        + f"u1,i1,view,{T0},\n"
        + f"u1,i1,view,{T0 + 1},\n"
        + "u2,i2,view,later,\n"
        + f"u3,i3,view,{T0},\n",
    )

    exit_code = main([str(path), "--no-progress"])

    output = capsys.readouterr().out.splitlines()
    assert exit_code == 0
    assert output[0] == f"Loaded {path} into table UserInteractions (format csv)"
    assert output[1] == "  rows read:          4"
    assert output[2] == "  rows written:       2"
    assert output[3] == "  rows rejected:      1"
    assert output[4].startswith("  duplicates merged:  1 ")
    assert output[5] == "Rejected rows (first 1 of 1):"
    assert output[6].startswith("  line 4: timestamp 'later' is neither")
    assert len(output) == 7


def test_main_lists_first_20_rejections(
    tmp_path: Path, dynamodb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [f"u{n},i{n},view,bad{n},\n" for n in range(25)]
    path = write_text(tmp_path, "interactions.csv", CSV_HEADER + "".join(rows))

    exit_code = main([str(path), "--no-progress"])

    output = capsys.readouterr().out
    assert exit_code == 0
    assert "Rejected rows (first 20 of 25):" in output
    assert "  line 21: timestamp 'bad19'" in output
    assert "line 22:" not in output
    assert "... 5 more; pass --rejects-file FILE to list all of them" in output


def test_main_writes_all_rejections_to_file(
    tmp_path: Path, dynamodb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [f"u{n},i{n},view,bad{n},\n" for n in range(25)]
    path = write_text(tmp_path, "interactions.csv", CSV_HEADER + "".join(rows))
    rejects = tmp_path / "rejects.csv"

    # With the progress bar on: pytest's captured stderr is not a terminal, so tqdm stays off.
    exit_code = main([str(path), "--rejects-file", str(rejects)])

    output = capsys.readouterr().out
    with rejects.open(encoding="utf-8", newline="") as rejects_input:
        saved = list(csv.reader(rejects_input))
    assert exit_code == 0
    assert f"All 25 rejected rows are listed in {rejects}" in output
    assert saved[0] == ["line_number", "reason"]
    assert [int(row[0]) for row in saved[1:]] == list(range(2, 27))
    assert saved[-1][1].startswith("timestamp 'bad24' is neither")


def test_main_missing_file_exits_1(
    tmp_path: Path, dynamodb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.csv"

    exit_code = main([str(missing), "--no-progress"])

    captured = capsys.readouterr()
    assert exit_code == 1
    assert captured.err == f"error: input file {missing} was not found; check the path\n"
    assert captured.out == ""


def test_main_missing_table_exits_1(
    tmp_path: Path, dynamodb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_text(tmp_path, "interactions.csv", CSV_HEADER + f"u,i,view,{T0},\n")

    exit_code = main([str(path), "--no-progress", "--table", "Missing"])

    captured = capsys.readouterr()
    assert exit_code == 1
    assert captured.err.startswith("error: table 'Missing' was not found at https://dynamodb.")
    assert "Traceback" not in captured.err


def test_main_undetectable_format_exits_1(
    tmp_path: Path, dynamodb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_text(tmp_path, "data.txt", "a;b;c\n")

    exit_code = main([str(path), "--no-progress"])

    captured = capsys.readouterr()
    assert exit_code == 1
    assert "cannot detect the format" in captured.err
    assert "pass --format" in captured.err


@pytest.mark.parametrize(
    "arguments",
    [["--format", "xml"], ["--table", "x"], []],
    ids=["unknown-format", "short-table-name", "no-path"],
)
def test_main_invalid_arguments_exit_2(
    tmp_path: Path, arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path_argument = [str(tmp_path / "a.csv")] if arguments else []

    with pytest.raises(SystemExit) as raised:
        main(path_argument + arguments)

    assert raised.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_main_table_name_from_environment(
    tmp_path: Path, dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_table(dynamodb, "OtherInteractions")
    monkeypatch.setenv("TABLE_NAME", "OtherInteractions")
    path = write_text(tmp_path, "interactions.csv", CSV_HEADER + f"u,i,view,{T0},\n")

    exit_code = main([str(path), "--no-progress"])

    assert exit_code == 0
    assert set(scan_items(dynamodb, "OtherInteractions")) == {("u", "i")}
    assert scan_items(dynamodb) == {}


def test_main_without_region_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION")
    path = write_text(tmp_path, "interactions.csv", CSV_HEADER + f"u,i,view,{T0},\n")

    exit_code = main([str(path), "--no-progress"])

    captured = capsys.readouterr()
    assert exit_code == 1
    assert "no AWS Region is set; pass --region" in captured.err


# --- Real local server -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def dynalite_url(tmp_path: Path) -> Iterator[str]:
    """Start an in-memory dynalite on 127.0.0.1 and return its URL once ListTables succeeds."""
    if not DYNALITE.exists():
        pytest.fail(f"{DYNALITE} is missing; run `make install` to install dynalite")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "dynalite.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(DYNALITE), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        probe = boto3.client(
            "dynamodb",
            endpoint_url=url,
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=2),
        )
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"dynalite exited with {process.returncode}: {log_path.read_text()}")
            try:
                probe.list_tables()
                break
            except BotoCoreError:
                if time.monotonic() > deadline:
                    pytest.fail(f"dynalite did not answer ListTables at {url} within 30 s")
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.http
def test_dynalite_load_and_query(
    tmp_path: Path, dynalite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = boto3.client("dynamodb", endpoint_url=dynalite_url)
    create_table(client, TABLE)
    path = write_text(
        tmp_path,
        "interactions.csv",
        CSV_HEADER
        + f"alice@example.com,item 1,view,{T0},\n"
        + f"alice@example.com,item 2,purchase,{T0 + 20},3\n"
        + f"alice@example.com,item 1,view,{T0 + 10},\n"  # same key as line 2, same batch
        + f"bob,item 1,rating,{T0 + 5},4.5\n"
        + "bob,item 3,view,not-a-time,\n",
    )

    exit_code = main([str(path), "--no-progress", "--endpoint-url", dynalite_url])

    assert exit_code == 0
    history = client.query(
        TableName=TABLE,
        IndexName="UserHistoryIndex",
        KeyConditionExpression="user_id = :user",
        ExpressionAttributeValues={":user": {"S": "alice@example.com"}},
        ScanIndexForward=False,
    )["Items"]
    assert [entry["item_id"]["S"] for entry in history] == ["item 2", "item 1"]
    assert [entry["timestamp"]["N"] for entry in history] == [str(T0 + 20), str(T0 + 10)]
    assert history[0]["weight"] == {"N": "3"}
    audience = client.query(
        TableName=TABLE,
        IndexName="ItemUsersIndex",
        KeyConditionExpression="item_id = :item",
        ExpressionAttributeValues={":item": {"S": "item 1"}},
    )["Items"]
    assert sorted(entry["user_id"]["S"] for entry in audience) == ["alice@example.com", "bob"]

    # The environment variable selects the endpoint when no URL is passed.
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynalite_url)
    report = load_file(path, TABLE, progress=False)

    assert report.rows_written == 3
    assert report.duplicates_merged == 1
    assert report.rows_rejected == 1
    assert len(scan_items(client)) == 3
