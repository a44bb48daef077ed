"""Checkpoint file of the loader: how far an import got, so that `--resume` can continue it.

The loader saves a checkpoint after every batch that DynamoDB fully acknowledged (no
UnprocessedItems left). It records the input line through which every row is written,
rejected or merged into a later row, the cumulative counts at that point, and a fingerprint
of the input file (size and SHA-256 of the whole file). A resumed load skips the rows up to
that line and refuses to continue when the file, the format, the table or the endpoint
differ from the ones recorded.

Each save writes a temporary file in the same folder and renames it over the checkpoint
(`os.replace`), so a reader finds the old or the new checkpoint, never a torn one. The file
is not fsynced: a crash of the machine may leave an older checkpoint, and resuming from an
older line is safe because puts of the same (user_id, item_id) only overwrite an item with
the same values.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
# Git-ignored, like the other local state under .local/.
DEFAULT_CHECKPOINT_DIR = REPO_ROOT / ".local" / "loader-checkpoints"
CHECKPOINT_FORMAT_VERSION = 1
HASH_CHUNK_BYTES = 1024 * 1024


class CheckpointError(Exception):
    """A checkpoint cannot be used. The message names the file and what to do."""


class CheckpointCorruptError(CheckpointError):
    """The checkpoint file is not a checkpoint this version of the loader wrote."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint belongs to another input file, format, table or endpoint."""


@dataclass(frozen=True)
class FileFingerprint:
    """Size and SHA-256 of a whole file, to detect that it changed between two runs."""

    size_bytes: int
    sha256: str

    @classmethod
    def of(cls, path: Path) -> FileFingerprint:
        """Hash the file at `path`; raise OSError when it cannot be read."""
        started = time.monotonic()
        digest = hashlib.sha256()
        size = 0
        with path.open("rb") as binary:
            while chunk := binary.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
        logger.info(
            "Hashed %s (%d bytes) in %.2f s for the checkpoint",
            path,
            size,
            time.monotonic() - started,
        )
        return cls(size_bytes=size, sha256=digest.hexdigest())


@dataclass(frozen=True)
class LoadCounts:
    """Cumulative counts of a load; rows_read = rows_written + rows_rejected + duplicates_merged."""

    rows_read: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    duplicates_merged: int = 0


@dataclass(frozen=True)
class RejectsFileState:
    """The rejects file of the run and its size in bytes when the checkpoint was saved."""

    path: str
    size_bytes: int


@dataclass(frozen=True)
class Checkpoint:
    """Progress of one load of one file into one table.

    `completed_through_line` is the last input line (1-based, as in the report) through
    which every row has been written, rejected or merged. Rows that start after it have
    not been handled yet. `rejections` contains only the first rejected rows, as many as
    the report shows, so that a resumed run can still list them.
    """

    input_path: str
    fingerprint: FileFingerprint
    file_format: str
    table_name: str
    endpoint_url: str
    completed_through_line: int
    counts: LoadCounts
    rejections: tuple[tuple[int, str], ...] = ()
    rejects_file: RejectsFileState | None = None
    saved_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["version"] = CHECKPOINT_FORMAT_VERSION
        document["rejections"] = [list(entry) for entry in self.rejections]
        return document

    @classmethod
    def from_json(cls, document: Any, source: Path) -> Checkpoint:
        """Build a checkpoint from parsed JSON; raise CheckpointCorruptError naming `source`."""
        if not isinstance(document, dict) or document.get("version") != CHECKPOINT_FORMAT_VERSION:
            version = document.get("version") if isinstance(document, dict) else None
            raise CheckpointCorruptError(
                f"checkpoint {source} has format version {version!r}, expected"
                f" {CHECKPOINT_FORMAT_VERSION}; delete it and rerun without --resume"
            )
        try:
            rejects = document["rejects_file"]
            return cls(
                input_path=str(document["input_path"]),
                fingerprint=FileFingerprint(**document["fingerprint"]),
                file_format=str(document["file_format"]),
                table_name=str(document["table_name"]),
                endpoint_url=str(document["endpoint_url"]),
                completed_through_line=int(document["completed_through_line"]),
                counts=LoadCounts(**document["counts"]),
                rejections=tuple(
                    (int(line), str(reason)) for line, reason in document["rejections"]
                ),
                rejects_file=RejectsFileState(**rejects) if rejects is not None else None,
                saved_at=str(document["saved_at"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointCorruptError(
                f"checkpoint {source} is incomplete or invalid ({type(error).__name__}: {error});"
                " delete it and rerun without --resume"
            ) from None


def default_checkpoint_path(input_path: Path, table_name: str) -> Path:
    """Return the default checkpoint of loading `input_path` into `table_name`.

    The name joins the input file name with a hash of its absolute path and the table, so
    that two files of the same name, or one file loaded into two tables, get two checkpoints.
    """
    identity = f"{input_path.resolve()}\0{table_name}".encode("utf-8", errors="surrogateescape")
    suffix = hashlib.sha256(identity).hexdigest()[:12]
    return DEFAULT_CHECKPOINT_DIR / f"{input_path.name}.{table_name}.{suffix}.checkpoint.json"


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write `checkpoint` to `path` atomically; raise OSError when the folder is not writable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(checkpoint.to_json(), indent=1), encoding="utf-8")
    os.replace(temporary, path)


def read_checkpoint(path: Path) -> Checkpoint | None:
    """Return the checkpoint at `path`, or None when there is none.

    Raises CheckpointCorruptError when the file exists but is not a valid checkpoint.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise CheckpointCorruptError(
            f"cannot read checkpoint {path}: {error.strerror}; fix its permissions or pass"
            " another --checkpoint"
        ) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise CheckpointCorruptError(
            f"checkpoint {path} is not valid JSON ({error.msg} at line {error.lineno});"
            " delete it and rerun without --resume"
        ) from None
    return Checkpoint.from_json(document, path)


def remove_checkpoint(path: Path) -> None:
    """Delete the checkpoint and any temporary file left next to it."""
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".tmp").unlink(missing_ok=True)


def check_resumable(
    checkpoint: Checkpoint,
    checkpoint_path: Path,
    *,
    fingerprint: FileFingerprint,
    file_format: str,
    table_name: str,
    endpoint_url: str,
) -> None:
    """Raise CheckpointMismatchError unless `checkpoint` describes this same load.

    The input path itself may differ: a copied or moved file with the same content resumes.
    """
    restart_hint = (
        f" Rerun without --resume to load the whole file from the top (puts are idempotent),"
        f" or delete {checkpoint_path}"
    )
    if fingerprint != checkpoint.fingerprint:
        recorded = checkpoint.fingerprint
        if fingerprint.size_bytes != recorded.size_bytes:
            change = f"its size is {fingerprint.size_bytes} bytes, was {recorded.size_bytes}"
        else:
            change = "its SHA-256 differs, at the same size"
        raise CheckpointMismatchError(
            f"the input file changed since checkpoint {checkpoint_path} was saved ({change});"
            f" the line numbers in the checkpoint no longer match its rows.{restart_hint}"
        )
    for name, option, current, recorded_value in (
        ("format", "--format", file_format, checkpoint.file_format),
        ("table", "--table", table_name, checkpoint.table_name),
        ("endpoint", "--endpoint-url", endpoint_url, checkpoint.endpoint_url),
    ):
        if current != recorded_value:
            raise CheckpointMismatchError(
                f"checkpoint {checkpoint_path} was saved for {name} {recorded_value!r}, but this"
                f" run uses {current!r}; pass the same {option} to resume.{restart_hint}"
            )
