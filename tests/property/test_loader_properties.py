"""Property-based tests of the loader (tools/loader.py, tools/interaction_formats.py) on moto.

Generated files mix valid rows with invalid ones (wrong field counts, blank or oversized ids,
bad timestamps and weights, bytes that are not UTF-8, JSON that is not an object), unicode
ids, odd whitespace, both line endings and blank lines. For every file:

- load_file never raises, except InputFileError for a header that is not a valid CSV header;
- every data record is either written or rejected, a rejection carrying the line where the
  record starts and a reason that names the field;
- rows_read == rows_written + rows_rejected + duplicates_merged;
- the table then contains exactly the last valid row of each (user_id, item_id).

Every run is derandomized; PROPERTY_MAX_EXAMPLES raises the number of cases per test.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from tools.interaction_formats import MAX_TIMESTAMP
from tools.loader import InputFileError, LoadReport, load_file
from tools.template_table import table_create_kwargs

MAX_EXAMPLES = int(os.environ.get("PROPERTY_MAX_EXAMPLES", "100"))
MIN_EXAMPLES = min(MAX_EXAMPLES, 50)

PROPERTY_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

REGION = "us-east-1"
CSV_COLUMNS = ("user_id", "item_id", "interaction_type", "timestamp", "weight")
LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what io.TextIOWrapper(newline="") splits lines on
TEMPLATE_TABLE = table_create_kwargs()


# --------------------------------------------------------------------------- fixtures


@dataclass
class MotoTables:
    """A moto DynamoDB client that hands out a fresh template table per example."""

    client: Any
    # CreateTable arguments from template.yaml, parsed once: parsing per example would
    # take most of the test's time.
    create_kwargs: dict[str, Any]

    def new_table(self) -> str:
        name = f"prop-{uuid.uuid4().hex[:12]}"
        self.client.create_table(**{**self.create_kwargs, "TableName": name})
        return name

    def items(self, table_name: str) -> dict[tuple[str, str], dict[str, Any]]:
        deserializer = TypeDeserializer()
        items: dict[tuple[str, str], dict[str, Any]] = {}
        pages = self.client.get_paginator("scan").paginate(TableName=table_name)
        for page in pages:
            for raw in page["Items"]:
                item = {name: deserializer.deserialize(value) for name, value in raw.items()}
                items[(item["user_id"], item["item_id"])] = item
        return items


@pytest.fixture
def tables() -> Iterator[MotoTables]:
    with mock_aws():
        yield MotoTables(boto3.client("dynamodb", region_name=REGION), TEMPLATE_TABLE)


@pytest.fixture
def examples(
    request: pytest.FixtureRequest, record_testsuite_property: Callable[[str, object], None]
) -> Iterator[list[int]]:
    """Count the examples a property test runs (one element per example); check the count."""
    counted: list[int] = []
    yield counted
    record_testsuite_property(f"{request.node.name} examples", len(counted))
    assert len(counted) >= MIN_EXAMPLES, f"only {len(counted)} examples ran"


def load(
    tables: MotoTables, tmp_path: Path, content: bytes, file_format: str, suffix: str = ""
) -> tuple[LoadReport, str]:
    """Write `content` to a file, load it into a fresh table and return (report, table name).

    The file is named input.FORMAT, or input.SUFFIX when `suffix` is given.
    """
    path = tmp_path / f"input.{suffix or file_format}"
    path.write_bytes(content)
    table_name = tables.new_table()
    report = load_file(
        path, table_name, client=tables.client, file_format=file_format, progress=False
    )
    return report, table_name


def assert_counts_add_up(report: LoadReport) -> None:
    assert report.rows_read == (
        report.rows_written + report.rows_rejected + report.duplicates_merged
    )
    assert report.rows_rejected == len(report.rejections)
    for line_number, reason in report.rejections:
        assert line_number >= 1, (line_number, reason)
        assert reason.strip(), line_number


# --------------------------------------------------------------------------- generated rows


# Ids and types: any text with a non-whitespace character, so the loader must keep it
# exactly, including surrounding spaces, quotes, commas, line breaks and NUL.
keys = st.text(min_size=1, max_size=12).filter(lambda text: text.strip() != "")
timestamps = st.integers(min_value=0, max_value=MAX_TIMESTAMP)
weights = st.none() | st.decimals(
    min_value=Decimal(-1000000), max_value=Decimal(1000000), places=4, allow_nan=False
)


@st.composite
def timestamp_texts(draw: st.DrawFn, seconds: int) -> str:
    """Draw one of the accepted spellings of `seconds`."""
    iso = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return draw(
        st.sampled_from([str(seconds), f" {seconds}\t", f"{seconds}.0", f"+{seconds}", iso])
    )


@dataclass(frozen=True)
class ValidRow:
    user_id: str
    item_id: str
    interaction_type: str
    timestamp: int
    weight: Decimal | None
    timestamp_text: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.user_id, self.item_id)

    def fields(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "item_id": self.item_id,
            "interaction_type": self.interaction_type,
            "timestamp": self.timestamp_text,
            "weight": "" if self.weight is None else str(self.weight),
        }


@dataclass(frozen=True)
class InvalidRow:
    """A row that must be rejected; `field` must appear in the rejection reason."""

    values: dict[str, Any]
    field: str
    wrong_field_count: int = 0  # fields added (positive) or removed (negative) in CSV


@st.composite
def valid_rows(draw: st.DrawFn) -> ValidRow:
    seconds = draw(timestamps)
    return ValidRow(
        user_id=draw(keys),
        item_id=draw(keys),
        interaction_type=draw(keys),
        timestamp=seconds,
        weight=draw(weights),
        timestamp_text=draw(timestamp_texts(seconds)),
    )


BAD_TIMESTAMPS = ("abc", "-5", "1.5", "nan", "inf", "1e400", "2023-11-14T22:13:20", "", "  ")
BAD_WEIGHTS = ("x", "inf", "NaN", "1e999", "1.2.3", "--1", "1" * 39)


@st.composite
def invalid_rows(draw: st.DrawFn) -> InvalidRow:
    row = draw(valid_rows()).fields()
    kind = draw(
        st.sampled_from(
            ["blank_user", "blank_item", "long_item", "long_user", "timestamp", "weight", "type"]
        )
    )
    if kind == "blank_user":
        row["user_id"] = draw(st.sampled_from(["", " ", "\t", " \u3000 "]))
        return InvalidRow(row, "user_id")
    if kind == "blank_item":
        row["item_id"] = draw(st.sampled_from(["", "  ", "\u2003"]))
        return InvalidRow(row, "item_id")
    if kind == "long_item":
        row["item_id"] = "é" * 513  # 1026 bytes of UTF-8 in 513 characters
        return InvalidRow(row, "item_id")
    if kind == "long_user":
        row["user_id"] = "u" * 2049
        return InvalidRow(row, "user_id")
    if kind == "timestamp":
        row["timestamp"] = draw(st.sampled_from(BAD_TIMESTAMPS))
        return InvalidRow(row, "timestamp")
    if kind == "weight":
        row["weight"] = draw(st.sampled_from(BAD_WEIGHTS))
        return InvalidRow(row, "weight")
    row["interaction_type"] = ""
    return InvalidRow(row, "interaction_type")


@st.composite
def csv_field_count_errors(draw: st.DrawFn) -> InvalidRow:
    row = draw(valid_rows()).fields()
    return InvalidRow(row, "fields", wrong_field_count=draw(st.sampled_from([-2, -1, 1, 3])))


BLANK_LINE = object()
NOT_UTF8 = object()  # a record whose user_id has bytes that are not UTF-8
# Longer than any generated key, so it cannot occur inside one.
NOT_UTF8_SENTINEL = "<user id that is not UTF-8>"


def csv_record(fields: list[str], line_end: str) -> str:
    """Format one CSV record ending in `line_end`.

    The writer runs with "\r\n" as its terminator because only then does it quote every
    field that contains a carriage return, which a reader would take for a line break.
    """
    text = io.StringIO()
    csv.writer(text, lineterminator="\r\n").writerow(fields)
    return text.getvalue().removesuffix("\r\n") + line_end


def expected_table(rows: list[Any]) -> dict[tuple[str, str], ValidRow]:
    latest: dict[tuple[str, str], ValidRow] = {}
    for row in rows:
        if isinstance(row, ValidRow):
            latest[row.key] = row
    return latest


def assert_table_holds(tables: MotoTables, table_name: str, expected: dict[Any, ValidRow]) -> None:
    stored = tables.items(table_name)

    assert set(stored) == set(expected)
    for key, row in expected.items():
        item = stored[key]
        assert item["interaction_type"] == row.interaction_type, key
        assert item["timestamp"] == row.timestamp, key
        if row.weight is None:
            assert "weight" not in item, key
        else:
            assert item["weight"] == row.weight, key


# --------------------------------------------------------------------------- CSV


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, list[Any], dict[int, Any]]:
    """Draw (file content, rows in order, row by the line where its record starts)."""
    columns = list(draw(st.permutations(CSV_COLUMNS)))
    if draw(st.booleans()):
        columns.insert(draw(st.integers(0, len(columns))), "ignored_column")
    header_names = [draw(st.sampled_from([name, f" {name}", f"{name} "])) for name in columns]
    line_end = draw(st.sampled_from(["\n", "\r\n"]))
    rows = draw(
        st.lists(
            st.one_of(
                valid_rows(),
                valid_rows(),
                invalid_rows(),
                csv_field_count_errors(),
                st.just(BLANK_LINE),
                st.just(NOT_UTF8),
            ),
            max_size=30,
        )
    )

    header = csv_record(header_names, line_end)
    content = bytearray(header.encode("utf-8"))
    line = 1 + len(LINE_BREAK.findall(header))
    starts: dict[int, Any] = {}
    for row in rows:
        if row is BLANK_LINE:
            content += line_end.encode()
            line += 1
            continue
        starts[line] = row
        if row is NOT_UTF8:
            values = {**draw(valid_rows()).fields(), "user_id": NOT_UTF8_SENTINEL}
        else:
            values = row.fields() if isinstance(row, ValidRow) else row.values
        fields = [values.get(name, "unused") for name in columns]
        if isinstance(row, InvalidRow) and row.wrong_field_count:
            if row.wrong_field_count > 0:
                fields += ["extra"] * row.wrong_field_count
            else:
                fields = fields[: row.wrong_field_count]
        record = csv_record(fields, line_end)
        encoded = record.encode("utf-8")
        content += encoded.replace(NOT_UTF8_SENTINEL.encode(), b"\xff\xfe-not-utf8")
        line += len(LINE_BREAK.findall(record))
    return bytes(content), rows, starts


@PROPERTY_SETTINGS
@given(generated=csv_files())
def test_csv_rows_written_or_rejected(
    generated: tuple[bytes, list[Any], dict[int, Any]],
    tables: MotoTables,
    tmp_path: Path,
    examples: list[int],
) -> None:
    examples.append(1)
    content, rows, starts = generated

    report, table_name = load(tables, tmp_path, content, "csv")

    records = [row for row in rows if row is not BLANK_LINE]
    valid = [row for row in rows if isinstance(row, ValidRow)]
    assert_counts_add_up(report)
    assert report.rows_read == len(records)
    assert report.rows_rejected == len(records) - len(valid)
    assert report.rows_written + report.duplicates_merged == len(valid)
    for line_number, reason in report.rejections:
        row = starts.get(line_number)
        assert row is not None, f"line {line_number} starts no generated record: {reason}"
        assert not isinstance(row, ValidRow), f"valid row rejected at line {line_number}: {reason}"
        if row is NOT_UTF8:
            assert "UTF-8" in reason, reason
        else:
            assert row.field in reason, (row.field, reason)
    assert_table_holds(tables, table_name, expected_table(rows))


# Characters that CSV and JSON parsers treat specially, plus odd whitespace and non-ASCII.
tricky_text = st.text(
    alphabet=st.sampled_from(",\"'\n\r\t \x00\x0b\x0c\x1c\x85\u2028\ufeff{}[]:\\aZ9é日-+.eE"),
    max_size=300,
)


@PROPERTY_SETTINGS
@given(body=tricky_text | st.binary(max_size=300), with_weight=st.booleans())
def test_csv_garbage_never_crashes(
    body: str | bytes, with_weight: bool, tables: MotoTables, tmp_path: Path, examples: list[int]
) -> None:
    examples.append(1)
    header = ",".join(CSV_COLUMNS if with_weight else CSV_COLUMNS[:4]) + "\n"
    payload = body if isinstance(body, bytes) else body.encode("utf-8")
    content = header.encode("utf-8") + payload

    report, table_name = load(tables, tmp_path, content, "csv")

    assert_counts_add_up(report)
    total_lines = 1 + len(LINE_BREAK.findall(content.decode("utf-8", "replace")))
    for line_number, _ in report.rejections:
        assert 2 <= line_number <= total_lines + 1, line_number
    assert len(tables.items(table_name)) <= report.rows_written


@PROPERTY_SETTINGS
@given(
    content=tricky_text | st.binary(max_size=200),
    file_format=st.sampled_from(["csv", "auto"]),
    suffix=st.sampled_from(["csv", "jsonl", "txt", "data"]),
)
def test_any_file_fails_cleanly(
    content: str | bytes,
    file_format: str,
    suffix: str,
    tables: MotoTables,
    tmp_path: Path,
    examples: list[int],
) -> None:
    # Any header, or any first line for format detection: a fatal error is InputFileError.
    examples.append(1)
    payload = content if isinstance(content, bytes) else content.encode("utf-8")

    try:
        report, _ = load(tables, tmp_path, payload, file_format, suffix)
    except InputFileError as error:
        assert str(error).strip()
    else:
        assert_counts_add_up(report)


# --------------------------------------------------------------------------- JSON Lines


@st.composite
def jsonl_invalid_lines(draw: st.DrawFn) -> tuple[str, str]:
    """Draw (line, word the rejection reason must contain)."""
    row = draw(valid_rows())
    document: dict[str, Any] = {
        "user_id": row.user_id,
        "item_id": row.item_id,
        "interaction_type": row.interaction_type,
        "timestamp": row.timestamp,
    }
    kind = draw(
        st.sampled_from(
            ["not_object", "broken", "missing", "number_id", "timestamp", "weight", "type"]
        )
    )

    if kind == "not_object":
        value = draw(st.sampled_from(["[1, 2]", '"text"', "42", "null", "true"]))
        return value, "JSON"
    if kind == "broken":
        broken = draw(st.sampled_from(['{"user_id": "u"', "{'a': 1}", "{,}", "NaN-ish", "{"]))
        return broken, "JSON"

    # A valid document with one field made invalid.
    if kind == "missing":
        field = draw(st.sampled_from(["user_id", "item_id", "interaction_type", "timestamp"]))
        del document[field]
        return json.dumps(document), field
    if kind == "number_id":
        field = draw(st.sampled_from(["user_id", "item_id"]))
        document[field] = draw(st.integers())
        return json.dumps(document), field
    if kind == "timestamp":
        document["timestamp"] = draw(st.sampled_from([-1, 1.5, "abc", True, 1e20, [1]]))
        return json.dumps(document), "timestamp"
    if kind == "weight":
        bad = draw(st.sampled_from(['"x"', "true", "Infinity", "NaN", "[1]", "1e999"]))
        return json.dumps(document)[:-1] + f', "weight": {bad}}}', "weight"
    document["interaction_type"] = draw(st.sampled_from(["", " ", 3]))
    return json.dumps(document), "interaction_type"


def valid_document(row: ValidRow, ensure_ascii: bool, extra: bool) -> str:
    document: dict[str, Any] = {
        "user_id": row.user_id,
        "item_id": row.item_id,
        "interaction_type": row.interaction_type,
        "timestamp": row.timestamp,
    }
    if row.weight is not None:
        document["weight"] = row.weight
    if extra:
        document["source"] = {"nested": [1, 2]}
    # A Decimal weight is written as a JSON number with all its digits.
    text = json.dumps(document, ensure_ascii=ensure_ascii, default=str)
    if row.weight is not None:
        text = text.replace(f'"weight": "{row.weight}"', f'"weight": {row.weight}')
    return text


@st.composite
def jsonl_files(draw: st.DrawFn) -> tuple[bytes, list[Any], dict[int, Any]]:
    line_end = draw(st.sampled_from(["\n", "\r\n"]))
    rows: list[Any] = []
    lines: list[str] = []
    starts: dict[int, Any] = {}
    for _ in range(draw(st.integers(min_value=0, max_value=30))):
        choice = draw(st.sampled_from(["valid", "valid", "invalid", "blank"]))
        if choice == "blank":
            lines.append(draw(st.sampled_from(["", "   ", "\t"])))
            continue
        if choice == "valid":
            row = draw(valid_rows())
            line = valid_document(row, draw(st.booleans()), draw(st.booleans()))
        else:
            line, word = draw(jsonl_invalid_lines())
            row = InvalidRow({}, word)
        starts[len(lines) + 1] = row
        rows.append(row)
        lines.append(line)
    content = "".join(line + line_end for line in lines).encode("utf-8")
    return content, rows, starts


@PROPERTY_SETTINGS
@given(generated=jsonl_files())
def test_jsonl_rows_written_or_rejected(
    generated: tuple[bytes, list[Any], dict[int, Any]],
    tables: MotoTables,
    tmp_path: Path,
    examples: list[int],
) -> None:
    examples.append(1)
    content, rows, starts = generated

    report, table_name = load(tables, tmp_path, content, "jsonl")

    valid = [row for row in rows if isinstance(row, ValidRow)]
    assert_counts_add_up(report)
    assert report.rows_read == len(rows)
    assert report.rows_rejected == len(rows) - len(valid)
    for line_number, reason in report.rejections:
        row = starts.get(line_number)
        assert isinstance(row, InvalidRow), f"line {line_number} rejected: {reason}"
        assert row.field in reason, (row.field, reason)
    assert_table_holds(tables, table_name, expected_table(rows))


@PROPERTY_SETTINGS
@given(body=tricky_text | st.binary(max_size=300))
def test_jsonl_garbage_never_crashes(
    body: str | bytes, tables: MotoTables, tmp_path: Path, examples: list[int]
) -> None:
    examples.append(1)
    content = body if isinstance(body, bytes) else body.encode("utf-8")

    report, table_name = load(tables, tmp_path, content, "jsonl")

    assert_counts_add_up(report)
    assert len(tables.items(table_name)) <= report.rows_written
