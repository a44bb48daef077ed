"""Write a seeded synthetic interaction log as CSV, in the loader's format, streamed to disk.

Usage: python -m tools.generate_interactions --interactions 1000000 --output PATH
       [--items M] [--zipf-exponent 1.0] [--median-history 12] [--history-sigma 1.2]
       [--max-history 5000] [--days 180] [--end-timestamp 1700000000] [--seed 42]

The shape follows what public interaction logs show, with made-up parameters:

- Item popularity is Zipf-like: the item of popularity rank r is drawn with
  probability proportional to ``1 / r ** s`` (``--zipf-exponent``). Ranks are
  shuffled onto item ids, so an id does not reveal an item's popularity.
- History lengths are heavy-tailed: log-normal with median ``--median-history``
  and shape ``--history-sigma``, at least 1 and at most ``--max-history`` (and
  half the catalogue). Each user's items are distinct, so every row is one
  (user_id, item_id) item of the table.
- Each user is active over a random window of ``--days`` ending at
  ``--end-timestamp``; their interactions are spread over it in time order.
- Types: view 60 %, click 20 %, add_to_cart 10 %, purchase 7 %, rating 3 %;
  rating rows carry a weight of 1 to 5, the others none.

Rows are grouped by user. The file has exactly ``--interactions`` data rows
(the last user's history is cut to fit) and the same bytes for the same flags.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import itertools
import logging
import math
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CSV_HEADER = ("user_id", "item_id", "interaction_type", "timestamp", "weight")
INTERACTION_TYPES = ("view", "click", "add_to_cart", "purchase", "rating")
TYPE_WEIGHTS = (0.60, 0.20, 0.10, 0.07, 0.03)
RATING_VALUES = ("1", "2", "3", "4", "5")
# Ratings lean positive, as in most rating logs.
RATING_WEIGHTS = (0.05, 0.10, 0.25, 0.35, 0.25)
SECONDS_PER_DAY = 86_400
# 2023-11-14T22:13:20Z: a fixed end, so that a seed gives the same file on any day.
DEFAULT_END_TIMESTAMP = 1_700_000_000
PROGRESS_EVERY_ROWS = 1_000_000


class GeneratorError(ValueError):
    """A generator setting is out of range; the message names it and the accepted values."""


@dataclass(frozen=True)
class GeneratorSettings:
    """Shape of the synthetic log; see the module docstring for each parameter."""

    interactions: int
    items: int | None = None  # default: max(1000, interactions // 20)
    zipf_exponent: float = 1.0
    median_history: float = 12.0
    history_sigma: float = 1.2
    max_history: int = 5000
    days: float = 180.0
    end_timestamp: int = DEFAULT_END_TIMESTAMP
    seed: int = 42

    @property
    def catalogue_size(self) -> int:
        return self.items if self.items is not None else max(1000, self.interactions // 20)

    def check(self) -> None:
        """Raise GeneratorError for a setting outside its range."""
        if self.interactions < 1:
            raise GeneratorError(f"interactions must be at least 1, got {self.interactions}")
        if self.catalogue_size < 2:
            raise GeneratorError(f"items must be at least 2, got {self.catalogue_size}")
        if not (math.isfinite(self.zipf_exponent) and 0 <= self.zipf_exponent <= 5):
            raise GeneratorError(f"zipf_exponent must be from 0 to 5, got {self.zipf_exponent}")
        if not (math.isfinite(self.median_history) and self.median_history >= 1):
            raise GeneratorError(f"median_history must be at least 1, got {self.median_history}")
        if not (math.isfinite(self.history_sigma) and 0 <= self.history_sigma <= 5):
            raise GeneratorError(f"history_sigma must be from 0 to 5, got {self.history_sigma}")
        if self.max_history < 1:
            raise GeneratorError(f"max_history must be at least 1, got {self.max_history}")
        if not (math.isfinite(self.days) and self.days > 0):
            raise GeneratorError(f"days must be a positive number, got {self.days}")
        if self.end_timestamp - self.days * SECONDS_PER_DAY < 0:
            raise GeneratorError(
                f"end_timestamp {self.end_timestamp} minus {self.days} days is before 1970;"
                " raise end_timestamp or lower days"
            )


@dataclass
class GeneratorReport:
    rows: int = 0
    users: int = 0
    items_used: int = 0
    longest_history: int = 0
    seconds: float = 0.0


class _ZipfItems:
    """Draws distinct item ids with Zipf-like popularity."""

    def __init__(self, size: int, exponent: float, rng: random.Random) -> None:
        ids = [f"i{number}" for number in range(1, size + 1)]
        rng.shuffle(ids)  # rank -> id
        self.ids = ids
        self.cumulative = list(
            itertools.accumulate(1.0 / rank**exponent for rank in range(1, size + 1))
        )
        self.total = self.cumulative[-1]

    def draw_distinct(self, count: int, rng: random.Random) -> list[str]:
        # A repeated item is drawn again. With a steep exponent the tail is so
        # rare that the draws may not find enough distinct items, so after
        # 20 * count draws the rest is filled in rank order.
        chosen: dict[int, None] = {}
        attempts = 0
        while len(chosen) < count and attempts < 20 * count + 100:
            rank = bisect.bisect_right(self.cumulative, rng.random() * self.total)
            chosen.setdefault(min(rank, len(self.ids) - 1), None)
            attempts += 1
        rank = 0
        while len(chosen) < count:
            chosen.setdefault(rank, None)
            rank += 1
        return [self.ids[rank] for rank in chosen]


def _history_lengths(settings: GeneratorSettings, rng: random.Random) -> Iterator[int]:
    cap = min(settings.max_history, max(1, settings.catalogue_size // 2))
    mu = math.log(settings.median_history)
    while True:
        length = round(rng.lognormvariate(mu, settings.history_sigma))
        yield max(1, min(cap, length))


def generate_rows(settings: GeneratorSettings) -> Iterator[tuple[str, str, str, int, str]]:
    """Yield the rows of the log: (user_id, item_id, interaction_type, timestamp, weight)."""
    settings.check()
    rng = random.Random(settings.seed)
    items = _ZipfItems(settings.catalogue_size, settings.zipf_exponent, rng)
    window = int(settings.days * SECONDS_PER_DAY)
    start = settings.end_timestamp - window
    remaining = settings.interactions
    lengths = _history_lengths(settings, rng)
    user_number = 0
    while remaining > 0:
        user_number += 1
        length = min(next(lengths), remaining)
        remaining -= length
        user_id = f"u{user_number}"
        # A user's activity starts at a random time and runs to the end of the window.
        first = rng.randrange(start, settings.end_timestamp)
        times = sorted(rng.randrange(first, settings.end_timestamp + 1) for _ in range(length))
        types = rng.choices(INTERACTION_TYPES, TYPE_WEIGHTS, k=length)
        for item_id, timestamp, interaction_type in zip(
            items.draw_distinct(length, rng), times, types, strict=True
        ):
            weight = (
                rng.choices(RATING_VALUES, RATING_WEIGHTS)[0]
                if interaction_type == "rating"
                else ""
            )
            yield user_id, item_id, interaction_type, timestamp, weight


def write_csv(settings: GeneratorSettings, output: Path) -> GeneratorReport:
    """Write the log to ``output`` through a ``.part`` file, so a cut run leaves no partial file."""
    report = GeneratorReport()
    started = time.monotonic()
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".part")

    users_seen = ""
    items_used: set[str] = set()
    history = 0
    with partial.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for row in generate_rows(settings):
            writer.writerow(row)
            report.rows += 1
            items_used.add(row[1])

            if row[0] != users_seen:
                users_seen = row[0]
                report.users += 1
                history = 0
            history += 1
            report.longest_history = max(report.longest_history, history)

            if report.rows % PROGRESS_EVERY_ROWS == 0:
                logger.info(
                    "Wrote %d of %d rows (%.1f s)",
                    report.rows,
                    settings.interactions,
                    time.monotonic() - started,
                )
    partial.replace(output)

    report.items_used = len(items_used)
    report.seconds = time.monotonic() - started
    logger.info(
        "Wrote %s: %d rows, %d users, %d of %d items used, longest history %d (%.1f s)",
        output,
        report.rows,
        report.users,
        report.items_used,
        settings.catalogue_size,
        report.longest_history,
        report.seconds,
    )
    return report


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.generate_interactions",
        description="Write a seeded synthetic interaction log as CSV for tools.loader.",
    )
    parser.add_argument(
        "--interactions",
        type=int,
        required=True,
        help="data rows to write, such as 100000, 1000000 or 10000000",
    )
    parser.add_argument("--output", type=Path, required=True, help="CSV file to write")
    parser.add_argument(
        "--items", type=int, help="catalogue size (default: max(1000, interactions / 20))"
    )
    parser.add_argument(
        "--zipf-exponent",
        type=float,
        default=1.0,
        help="popularity exponent s; rank r is drawn with weight 1/r^s (default: %(default)s)",
    )
    parser.add_argument(
        "--median-history",
        type=float,
        default=12.0,
        help="median interactions per user (default: %(default)s)",
    )
    parser.add_argument(
        "--history-sigma",
        type=float,
        default=1.2,
        help="log-normal shape of history lengths; larger is a heavier tail (default: %(default)s)",
    )
    parser.add_argument(
        "--max-history",
        type=int,
        default=5000,
        help="maximum history length of one user (default: %(default)s)",
    )
    parser.add_argument(
        "--days",
        type=float,
        default=180.0,
        help="time span of the log in days (default: %(default)s)",
    )
    parser.add_argument(
        "--end-timestamp",
        type=int,
        default=DEFAULT_END_TIMESTAMP,
        help="epoch second of the last possible interaction (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m tools.generate_interactions`; return the exit code."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = GeneratorSettings(
        interactions=args.interactions,
        items=args.items,
        zipf_exponent=args.zipf_exponent,
        median_history=args.median_history,
        history_sigma=args.history_sigma,
        max_history=args.max_history,
        days=args.days,
        end_timestamp=args.end_timestamp,
        seed=args.seed,
    )
    try:
        write_csv(settings, args.output)
    except GeneratorError as error:
        logger.error("Invalid setting: %s", error)
        return 2
    except OSError as error:
        logger.error("Cannot write %s: %s", args.output, error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
