"""Readers and row validation for the interaction file formats that the loader accepts.

Every reader takes an open text file and yields one `ParsedRow` or
`RejectedRow` per data record, lazily, so a file of any size streams through
in constant memory. A bad row never stops a reader: it becomes a
`RejectedRow` with its line number and a reason that names the field and
value. Only a problem with the whole file (an unknown format, a missing
header) raises `FormatError`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, BinaryIO, TextIO

logger = logging.getLogger(__name__)

FORMATS = ("csv", "jsonl", "movielens", "udata")

# DynamoDB key size limits, in bytes of UTF-8: 2048 for a partition key and
# 1024 for a sort key (DynamoDB developer guide, "Constraints").
MAX_USER_ID_BYTES = 2048
MAX_ITEM_ID_BYTES = 1024

# DynamoDB's maximum item size (400 KB), which counts attribute names and
# values. A number value takes about 1 byte per two significant digits plus 1
# (developer guide, "Item sizes and formats"), so 21 bytes bound 38 digits.
MAX_ITEM_BYTES = 400 * 1024
MAX_NUMBER_BYTES = 21

# DynamoDB numbers hold up to 38 significant digits, with magnitudes from
# 1E-130 to below 1E+126 (developer guide, "Data types").
MAX_NUMBER_DIGITS = 38
MIN_NUMBER_EXPONENT = -130
MAX_NUMBER_EXPONENT = 125

# 9999-12-31T23:59:59Z. A larger value is almost always a timestamp in
# milliseconds or microseconds, which would sort wrongly against seconds.
MAX_TIMESTAMP = 253_402_300_799

CSV_COLUMNS = ("user_id", "item_id", "interaction_type", "timestamp")
CSV_OPTIONAL_COLUMNS = ("weight",)
MOVIELENS_HEADER = ("userId", "movieId", "rating", "timestamp")
UDATA_FIELD_COUNT = 4
RATING_INTERACTION = "rating"

# Auto-detection reads at most this many characters of the first line.
DETECTION_READ_LIMIT = 64 * 1024
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")

# Values quoted in rejection reasons are cut to this many characters.
QUOTED_VALUE_CHARS = 60

_INTEGER_TEXT = re.compile(r"[+-]?\d+")
_DECIMAL_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_NON_FINITE_TEXT = re.compile(r"[+-]?(nan|inf|infinity)", re.IGNORECASE)


class FormatError(Exception):
    """The file as a whole cannot be read in the requested or detected format."""


class RowError(ValueError):
    """One row is invalid. The message is the rejection reason shown to the user."""


@dataclass(frozen=True, slots=True)
class Interaction:
    """One validated interaction, ready to store as a DynamoDB item."""

    user_id: str
    item_id: str
    interaction_type: str
    timestamp: int  # epoch seconds, UTC
    weight: Decimal | None = None

    @property
    def key(self) -> tuple[str, str]:
        """Primary key of the item: (partition key, sort key)."""
        return (self.user_id, self.item_id)


@dataclass(frozen=True, slots=True)
class ParsedRow:
    """A valid data row and the line of the file where it starts (1-based)."""

    line_number: int
    interaction: Interaction


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """An invalid data row, the line where it starts (1-based) and why it was rejected."""

    line_number: int
    reason: str


Row = ParsedRow | RejectedRow
Reader = Callable[[TextIO], Iterator[Row]]


def quote_value(value: object) -> str:
    """Return `repr(value)`, cut to a length that fits in one report line."""
    text = repr(value)
    if len(text) > QUOTED_VALUE_CHARS:
        return text[: QUOTED_VALUE_CHARS - 3] + "..."
    return text


# --- Field validation -------------------------------------------------------


def _utf8_length(field: str, value: str) -> int:
    # Readers decode with errors="surrogateescape", so bytes that are not
    # UTF-8 survive as lone surrogates and fail here, row by row.
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise RowError(
            f"{field} {quote_value(value)} is not valid UTF-8; re-encode the file as UTF-8"
        ) from None


def validate_text(field: str, value: object) -> str:
    """Check that `value` is a non-blank string of valid UTF-8 and return it unchanged."""
    if value is None or value == "":
        raise RowError(f"{field} is missing or empty")
    if not isinstance(value, str):
        raise RowError(
            f"{field} must be a string, got {type(value).__name__} {quote_value(value)};"
            " quote it in the file"
        )
    if value.strip() == "":
        raise RowError(f"{field} {quote_value(value)} contains only whitespace")
    _utf8_length(field, value)
    return value


def validate_key(field: str, value: object, max_bytes: int) -> str:
    """Check a key attribute: a non-blank string of at most `max_bytes` bytes of UTF-8.

    The value is returned as given: surrounding spaces are kept, because they
    are part of the key.
    """
    text = validate_text(field, value)
    size = _utf8_length(field, text)
    if size > max_bytes:
        raise RowError(
            f"{field} {quote_value(text)} is {size} bytes of UTF-8, over the DynamoDB"
            f" key limit of {max_bytes} bytes"
        )
    return text


def parse_timestamp(value: object) -> int:
    """Convert a timestamp field to integer epoch seconds.

    Accepted forms are an integer, a float or numeric string with no
    fractional part ("1700000000", "1700000000.0", "1.7e9"), and an ISO-8601
    date-time with a timezone ("2023-11-14T22:13:20Z"). Fractional seconds of
    an ISO-8601 value are dropped. Negative, non-finite and
    after-year-9999 values raise RowError.
    """
    if value is None or value == "":
        raise RowError("timestamp is missing or empty")
    if isinstance(value, bool):
        raise RowError(f"timestamp must be epoch seconds, got boolean {quote_value(value)}")
    if isinstance(value, (int, float, Decimal)):
        return _whole_seconds(value, value)
    if isinstance(value, str):
        return _parse_timestamp_text(value)
    raise RowError(
        f"timestamp must be epoch seconds or an ISO-8601 string, got"
        f" {type(value).__name__} {quote_value(value)}"
    )


def _parse_timestamp_text(text: str) -> int:
    stripped = text.strip()
    if _NON_FINITE_TEXT.fullmatch(stripped):
        raise RowError(f"timestamp {quote_value(text)} is not a finite number")
    if _DECIMAL_TEXT.fullmatch(stripped):
        try:
            number = Decimal(stripped)
        except InvalidOperation:
            raise RowError(f"timestamp {quote_value(text)} is not a number") from None
        return _whole_seconds(number, text)
    return _parse_iso_timestamp(stripped, text)


def _whole_seconds(number: float | Decimal, original: object) -> int:
    finite = number.is_finite() if isinstance(number, Decimal) else math.isfinite(number)
    if not finite:
        raise RowError(f"timestamp {quote_value(original)} is not a finite number")
    # The range check comes before int(), which would build a huge integer
    # from a value such as "1e999999".
    _check_timestamp_range(number, original)
    if number != int(number):
        raise RowError(
            f"timestamp {quote_value(original)} has a fractional part; give whole epoch seconds"
        )
    return int(number)


def _parse_iso_timestamp(stripped: str, original: str) -> int:
    not_a_timestamp = RowError(
        f"timestamp {quote_value(original)} is neither integer epoch seconds nor an"
        " ISO-8601 date-time with a timezone"
    )
    # A date-time needs a date and a time, so a date alone is rejected here
    # with the message above instead of as a date-time without a timezone.
    if "T" not in stripped.upper() and " " not in stripped:
        raise not_a_timestamp
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise not_a_timestamp from None
    if moment.tzinfo is None:
        raise RowError(
            f"timestamp {quote_value(original)} has no timezone; add 'Z' or an offset"
            " such as '+00:00'"
        )
    seconds = math.floor(moment.timestamp())
    _check_timestamp_range(seconds, original)
    return seconds


def _check_timestamp_range(seconds: float | Decimal, original: object) -> None:
    if seconds < 0:
        raise RowError(f"timestamp {quote_value(original)} is negative")
    if seconds > MAX_TIMESTAMP:
        raise RowError(
            f"timestamp {quote_value(original)} is after the year 9999; epoch seconds"
            " are expected, not milliseconds"
        )


def parse_weight(value: object, field: str = "weight") -> Decimal | None:
    """Convert an optional weight to a Decimal, or None when it is absent or empty.

    boto3 stores numbers only from Decimal (or int), and the value must fit a
    DynamoDB number: finite, at most 38 significant digits, magnitude in range.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RowError(f"{field} must be a number, got boolean {quote_value(value)}")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise RowError(f"{field} {quote_value(value)} is not a finite number")
        # repr() gives the shortest text that round-trips, so 0.1 stays 0.1.
        number = Decimal(repr(value))
    elif isinstance(value, Decimal):
        number = value
    elif isinstance(value, str):
        number = _parse_decimal_text(value, field)
    else:
        raise RowError(f"{field} must be a number, got {type(value).__name__} {quote_value(value)}")
    return _check_dynamodb_number(number, field, value)


def _parse_decimal_text(text: str, field: str) -> Decimal:
    stripped = text.strip()
    if _NON_FINITE_TEXT.fullmatch(stripped):
        raise RowError(f"{field} {quote_value(text)} is not a finite number")
    if not _DECIMAL_TEXT.fullmatch(stripped):
        raise RowError(f"{field} {quote_value(text)} is not a number")
    try:
        return Decimal(stripped)
    except InvalidOperation:
        raise RowError(f"{field} {quote_value(text)} is not a number") from None


def _check_dynamodb_number(number: Decimal, field: str, original: object) -> Decimal:
    if not number.is_finite():
        raise RowError(f"{field} {quote_value(original)} is not a finite number")
    if number.is_zero():
        return number
    # Count significant digits from the digit tuple: normalize() would round
    # to the context precision (28 digits) first and hide the excess.
    digit_tuple = number.as_tuple().digits
    trailing_zeros = len(digit_tuple) - len("".join(map(str, digit_tuple)).rstrip("0"))
    digits = len(digit_tuple) - trailing_zeros
    if digits > MAX_NUMBER_DIGITS:
        raise RowError(
            f"{field} {quote_value(original)} has {digits} significant digits; DynamoDB"
            f" stores at most {MAX_NUMBER_DIGITS}"
        )
    magnitude = number.adjusted()
    if magnitude < MIN_NUMBER_EXPONENT or magnitude > MAX_NUMBER_EXPONENT:
        raise RowError(f"{field} {quote_value(original)} is outside the DynamoDB number range")
    return number


def estimate_item_bytes(interaction: Interaction) -> int:
    """Return an upper bound of the DynamoDB item size of `interaction`, in bytes."""
    size = 0
    for name, text in (
        ("user_id", interaction.user_id),
        ("item_id", interaction.item_id),
        ("interaction_type", interaction.interaction_type),
    ):
        size += len(name) + len(text.encode("utf-8"))
    size += len("timestamp") + MAX_NUMBER_BYTES
    if interaction.weight is not None:
        size += len("weight") + MAX_NUMBER_BYTES
    return size


def build_interaction(
    user_id: object,
    item_id: object,
    interaction_type: object,
    timestamp: object,
    weight: object = None,
    *,
    weight_field: str = "weight",
) -> Interaction:
    """Validate the fields of one row and return the Interaction; raise RowError if invalid."""
    interaction = Interaction(
        user_id=validate_key("user_id", user_id, MAX_USER_ID_BYTES),
        item_id=validate_key("item_id", item_id, MAX_ITEM_ID_BYTES),
        interaction_type=validate_text("interaction_type", interaction_type),
        timestamp=parse_timestamp(timestamp),
        weight=parse_weight(weight, weight_field),
    )
    size = estimate_item_bytes(interaction)
    if size > MAX_ITEM_BYTES:
        raise RowError(
            f"row would be a {size}-byte DynamoDB item, over the {MAX_ITEM_BYTES}-byte"
            " item size limit; shorten interaction_type"
        )
    return interaction


# --- Readers ------------------------------------------------------------------


def _csv_records(text: TextIO) -> Iterator[tuple[int, list[str] | RowError]]:
    """Yield (start line, fields) per CSV record, skipping blank lines.

    A record that the csv module cannot parse (a field over its size limit)
    is yielded as a RowError, and reading goes on at the next line.
    """
    reader = csv.reader(text)
    while True:
        start_line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield start_line, RowError(f"unreadable CSV record: {error}")
            continue
        if fields:
            yield start_line, fields


def _read_header(records: Iterator[tuple[int, list[str] | RowError]], expected: str) -> list[str]:
    for _line_number, fields in records:
        if isinstance(fields, RowError):
            raise FormatError(f"the header line cannot be parsed ({fields}); expected {expected}")
        return [name.strip() for name in fields]
    raise FormatError(f"the file is empty; expected a header line {expected}")


def read_csv(text: TextIO) -> Iterator[Row]:
    """Read CSV with a header naming user_id, item_id, interaction_type, timestamp[, weight].

    Columns may come in any order, and other columns are ignored.
    """
    expected = "with columns " + ",".join(CSV_COLUMNS) + " and optionally weight"
    records = _csv_records(text)
    header = _read_header(records, expected)
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise FormatError(f"the CSV header names column(s) {duplicates} more than once")
    missing = [name for name in CSV_COLUMNS if name not in header]
    if missing:
        raise FormatError(
            f"the CSV header {quote_value(','.join(header))} lacks column(s)"
            f" {', '.join(missing)}; expected a header {expected}"
        )
    known = (*CSV_COLUMNS, *CSV_OPTIONAL_COLUMNS)
    positions = {name: header.index(name) for name in known if name in header}
    ignored = [name for name in header if name not in known]
    if ignored:
        logger.warning("Ignoring CSV column(s) that the table does not store: %s", ignored)

    for line_number, fields in records:
        if isinstance(fields, RowError):
            yield RejectedRow(line_number, str(fields))
            continue
        if len(fields) != len(header):
            yield RejectedRow(line_number, f"expected {len(header)} fields, found {len(fields)}")
            continue
        values = {name: fields[position] for name, position in positions.items()}
        yield _build_row(line_number, values)


def read_jsonl(text: TextIO) -> Iterator[Row]:
    """Read JSON Lines: one object per line with the same keys as the CSV columns.

    Blank lines are skipped, other keys are ignored, and a null weight means no weight.
    """
    for line_number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            # parse_float=Decimal keeps the exact digits written in the file.
            document = json.loads(line, parse_float=Decimal)
        except json.JSONDecodeError as error:
            yield RejectedRow(line_number, f"invalid JSON: {error.msg} at column {error.colno}")
            continue
        except (ValueError, RecursionError) as error:
            # json raises these for an integer of more than 4300 digits and
            # for very deep nesting.
            yield RejectedRow(line_number, f"invalid JSON: {error}")
            continue
        if not isinstance(document, dict):
            yield RejectedRow(
                line_number,
                f"expected a JSON object, found {_json_type_name(document)}",
            )
            continue
        yield _build_row(line_number, document)


def _json_type_name(document: Any) -> str:
    if isinstance(document, list):
        return "an array"
    if isinstance(document, str):
        return "a string"
    if document is None:
        return "null"
    if isinstance(document, bool):
        return "a boolean"
    return "a number"


def _build_row(line_number: int, values: dict[str, Any]) -> Row:
    try:
        interaction = build_interaction(
            values.get("user_id"),
            values.get("item_id"),
            values.get("interaction_type"),
            values.get("timestamp"),
            values.get("weight"),
        )
    except RowError as error:
        return RejectedRow(line_number, str(error))
    return ParsedRow(line_number, interaction)


def _build_rating_row(line_number: int, fields: list[str]) -> Row:
    user_id, item_id, rating, timestamp = fields
    try:
        if rating.strip() == "":
            raise RowError("rating is missing or empty")
        interaction = build_interaction(
            user_id, item_id, RATING_INTERACTION, timestamp, rating, weight_field="rating"
        )
    except RowError as error:
        return RejectedRow(line_number, str(error))
    return ParsedRow(line_number, interaction)


def read_movielens(text: TextIO) -> Iterator[Row]:
    """Read a MovieLens ratings.csv (userId,movieId,rating,timestamp) as "rating" rows."""
    expected = ",".join(MOVIELENS_HEADER)
    records = _csv_records(text)
    header = _read_header(records, expected)
    if tuple(header) != MOVIELENS_HEADER:
        raise FormatError(
            f"the MovieLens header is {quote_value(','.join(header))}; expected {expected}"
        )
    for line_number, fields in records:
        if isinstance(fields, RowError):
            yield RejectedRow(line_number, str(fields))
            continue
        if len(fields) != len(MOVIELENS_HEADER):
            yield RejectedRow(
                line_number, f"expected {len(MOVIELENS_HEADER)} fields, found {len(fields)}"
            )
            continue
        yield _build_rating_row(line_number, fields)


def read_udata(text: TextIO) -> Iterator[Row]:
    """Read MovieLens 100k u.data: tab-separated user, item, rating, timestamp; no header."""
    for line_number, line in enumerate(text, start=1):
        content = line.rstrip("\r\n")
        if not content.strip():
            continue
        fields = content.split("\t")
        if len(fields) != UDATA_FIELD_COUNT:
            yield RejectedRow(
                line_number,
                f"expected {UDATA_FIELD_COUNT} tab-separated fields, found {len(fields)}",
            )
            continue
        yield _build_rating_row(line_number, fields)


READERS: dict[str, Reader] = {
    "csv": read_csv,
    "jsonl": read_jsonl,
    "movielens": read_movielens,
    "udata": read_udata,
}


# --- Format detection ---------------------------------------------------------


def detect_format(path: Path) -> str:
    """Return the format of the file at `path` from its extension or first non-blank line.

    Raises FormatError naming the path and the first line when no rule matches.
    """
    if path.suffix.lower() in JSONL_SUFFIXES:
        return "jsonl"
    first_line = _first_non_blank_line(path)
    if first_line is None:
        raise FormatError(f"{path} is empty, so its format cannot be detected")

    if first_line.startswith("userId,movieId"):
        return "movielens"
    tab_fields = first_line.split("\t")
    if len(tab_fields) == UDATA_FIELD_COUNT and all(
        _DECIMAL_TEXT.fullmatch(field.strip()) for field in tab_fields
    ):
        return "udata"
    header = next(csv.reader([first_line]), [])
    if "user_id" in (name.strip() for name in header):
        return "csv"
    if first_line.lstrip().startswith("{"):
        return "jsonl"
    raise FormatError(
        f"cannot detect the format of {path} from its extension or its first line"
        f" {quote_value(first_line)}; pass --format with one of {', '.join(FORMATS)}"
        " (csv needs a header with user_id, item_id, interaction_type, timestamp)"
    )


def _first_non_blank_line(path: Path) -> str | None:
    with open_text(path.open("rb")) as text:
        while True:
            line = text.readline(DETECTION_READ_LIMIT)
            if line == "":
                return None
            if line.strip():
                return line.rstrip("\r\n")


def open_text(binary: BinaryIO) -> TextIO:
    """Wrap a binary stream as the text stream that the readers expect.

    utf-8-sig drops a byte-order mark, newline="" lets the csv module see
    quoted line breaks, and surrogateescape defers bytes that are not UTF-8
    to per-row validation instead of failing the whole file.
    """
    return io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")
