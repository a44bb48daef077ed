"""Read a rating log into per-user histories and split it for evaluation.

Any format of tools/interaction_formats.py is accepted (MovieLens ratings.csv,
ML-100k u.data, the loader's CSV and JSON Lines). Each row becomes one
`recommender.Interaction` of the file's interaction type, with the rating as
its weight. As in the table, one (user, item) pair keeps one interaction: a
later row of the file replaces an earlier one, as the loader's puts would.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from recommender import Interaction
from tools.interaction_formats import (
    FORMATS,
    READERS,
    FormatError,
    RejectedRow,
    detect_format,
    open_text,
)

logger = logging.getLogger(__name__)

# Rejected rows quoted in the error raised when a file has no valid row.
QUOTED_REJECTIONS = 3


class DatasetError(Exception):
    """The rating file cannot be evaluated; the message gives the reason and the fix."""


@dataclass(frozen=True)
class RatingLog:
    """Every user's interactions, with counts of what reading the file dropped."""

    path: str
    file_format: str
    histories: dict[str, list[Interaction]]
    rows_read: int
    rows_rejected: int
    duplicates_merged: int

    @property
    def interactions(self) -> int:
        return sum(len(history) for history in self.histories.values())

    def catalogue(self) -> set[str]:
        """Return every item of the log: the denominator of item coverage."""
        return {row.item_id for history in self.histories.values() for row in history}


@dataclass(frozen=True)
class Split:
    """Per-user training interactions and held-out test items."""

    train: dict[str, list[Interaction]]
    test: dict[str, set[str]]
    seed: int
    train_fraction: float

    def test_users(self) -> list[str]:
        """Return the users with at least one test item, in natural id order."""
        return sorted((user for user, items in self.test.items() if items), key=natural_key)


def natural_key(identifier: str) -> tuple[int, int, str]:
    """Sort key that puts decimal ids in numeric order ("2" before "10"), then other ids."""
    if identifier.isdecimal():
        return (0, int(identifier), identifier)
    return (1, 0, identifier)


def resolve_format(path: Path, file_format: str) -> str:
    """Return `file_format`, or the detected format when it is "auto"."""
    if file_format == "auto":
        try:
            return detect_format(path)
        except FormatError as error:
            raise DatasetError(str(error)) from None
        except OSError as error:
            raise DatasetError(f"cannot read {path}: {error.strerror}") from None
    if file_format not in FORMATS:
        raise DatasetError(
            f"unknown format {file_format!r}; use auto or one of {', '.join(FORMATS)}"
        )
    return file_format


def read_ratings(path: str | Path, file_format: str = "auto") -> RatingLog:
    """Read the interaction file at `path` into per-user histories.

    Invalid rows are counted and logged, not fatal; a file without any valid
    row raises DatasetError with the first rejection reasons.
    """
    source = Path(path)
    if not source.is_file():
        raise DatasetError(
            f"rating file {source} was not found; pass the path of ratings.csv or u.data"
        )
    resolved = resolve_format(source, file_format)
    started = time.perf_counter()

    latest: dict[tuple[str, str], Interaction] = {}
    rows_read = 0
    rejections: list[RejectedRow] = []
    rejected = 0
    duplicates = 0
    try:
        with source.open("rb") as binary, open_text(binary) as text:
            for row in READERS[resolved](text):
                rows_read += 1
                if isinstance(row, RejectedRow):
                    rejected += 1
                    if len(rejections) < QUOTED_REJECTIONS:
                        rejections.append(row)
                    continue
                parsed = row.interaction
                key = (parsed.user_id, parsed.item_id)
                if key in latest:
                    duplicates += 1
                latest[key] = Interaction(
                    item_id=parsed.item_id,
                    timestamp=parsed.timestamp,
                    interaction_type=parsed.interaction_type,
                    weight=float(parsed.weight) if parsed.weight is not None else None,
                )
    except FormatError as error:
        raise DatasetError(f"{source}: {error}") from None
    except OSError as error:
        raise DatasetError(f"an I/O error stopped reading {source}: {error}") from None

    if not latest:
        reasons = "; ".join(f"line {row.line_number}: {row.reason}" for row in rejections)
        raise DatasetError(
            f"{source} has no valid interaction ({rows_read} rows read as {resolved}"
            f"{', first rejections: ' + reasons if reasons else ''}); check the file and --format"
        )
    for row in rejections:
        logger.warning("Skipped line %d of %s: %s", row.line_number, source, row.reason)

    histories: dict[str, list[Interaction]] = {}
    for (user_id, _item_id), interaction in latest.items():
        histories.setdefault(user_id, []).append(interaction)
    log = RatingLog(
        path=str(source),
        file_format=resolved,
        histories=histories,
        rows_read=rows_read,
        rows_rejected=rejected,
        duplicates_merged=duplicates,
    )
    logger.info(
        "Read %s (%s) in %.1f s: %d rows, %d rejected, %d duplicates merged,"
        " %d interactions of %d users on %d items",
        source,
        resolved,
        time.perf_counter() - started,
        rows_read,
        rejected,
        duplicates,
        log.interactions,
        len(histories),
        len(log.catalogue()),
    )
    return log


def split_per_user(
    histories: Mapping[str, Sequence[Interaction]], seed: int = 42, train_fraction: float = 0.75
) -> Split:
    """Split each user's interactions at random into training and test parts.

    One `random.Random(seed)` shuffles the users' interactions in turn, users in
    natural id order and each user's interactions first sorted by (timestamp,
    item id), so the split depends on the log's content, not on row order.
    The first `round(train_fraction * n)` shuffled interactions train (Python's
    round, which rounds halves to even: 4.5 gives 4), the rest are test items.
    """
    if not 0.0 < train_fraction < 1.0:
        raise DatasetError(
            f"train fraction must be between 0 and 1 (exclusive), got {train_fraction!r}"
        )
    rng = random.Random(seed)
    train: dict[str, list[Interaction]] = {}
    test: dict[str, set[str]] = {}
    for user_id in sorted(histories, key=natural_key):
        interactions = sorted(
            histories[user_id], key=lambda row: (row.timestamp, natural_key(row.item_id))
        )
        rng.shuffle(interactions)
        train_size = round(train_fraction * len(interactions))
        train[user_id] = interactions[:train_size]
        test[user_id] = {row.item_id for row in interactions[train_size:]}
    return Split(train=train, test=test, seed=seed, train_fraction=train_fraction)
