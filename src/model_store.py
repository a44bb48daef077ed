"""Data access: every DynamoDB call on the model table, and the builder's Scan of the interactions.

Layout of the model table (partition key ``pk``, see RecommendationModelTable
in template.yaml). Each build writes a new version id ``<UTC time>-<random>``:

- ``v#<version>#item#<item_id>``: ``popularity`` (N, users of the item) and
  ``neighbours`` (S, JSON list of ``[item_id, similarity]``, best first).
- ``v#<version>#popular``: ``items`` (S, JSON list of ``[item_id, users]``).
- ``v#<version>#meta``: ``built_at`` (S), ``config`` (S, JSON) and counts.
- ``CURRENT``: ``version``, ``built_at``, ``model_expires_at``; written only
  after every item of the version, so a reader never sees a partial version.

Every versioned item carries ``expires_at`` (N, epoch seconds) for DynamoDB's
TTL, so versions that are no longer current disappear on their own. CURRENT has
none. Builds must therefore run more often than the retention, or the current
version itself expires (DynamoDB deletes expired items within a few days of
the time, not at it).

boto3 errors become ``StoreUnavailableError`` (retry later) or ``StoreError``,
the classes of ``interaction_store``.
"""

from __future__ import annotations

import math
import os
import queue
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError

from config import read_float
from interaction_store import RETRYABLE_ERROR_CODES, ReadStats, StoreError, StoreUnavailableError
from item_model import (
    InteractionRecord,
    ModelFormatError,
    ModelItem,
    decode_neighbours,
    decode_popular,
    encode_neighbours,
    encode_popular,
)

logger = Logger(child=True)

MODEL_TABLE_NAME = "MODEL_TABLE_NAME"
MODEL_CACHE_SECONDS = "MODEL_CACHE_SECONDS"
MODEL_RETENTION_HOURS = "MODEL_RETENTION_HOURS"
DEFAULT_CACHE_SECONDS = 60.0
DEFAULT_RETENTION_HOURS = 72.0

CURRENT_KEY = "CURRENT"
KEY_ATTRIBUTE = "pk"
TTL_ATTRIBUTE = "expires_at"

# Request limits of DynamoDB: 25 put or delete requests per BatchWriteItem,
# 100 keys per BatchGetItem.
MAX_BATCH_WRITE_ITEMS = 25
MAX_BATCH_GET_KEYS = 100

# Largest page of one Scan request, in items; DynamoDB also stops a page at 1 MB.
DEFAULT_SCAN_PAGE_SIZE = 1000
MAX_SCAN_SEGMENTS = 64
SCAN_PROJECTION = "user_id, item_id, interaction_type, #ts, weight"


class StaleVersionError(StoreError):
    """CURRENT already points at a version newer than the one being published."""


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for the keys or items that a batch call returns unprocessed."""

    max_attempts: int  # calls per batch, the first one included
    base_delay_seconds: float
    max_delay_seconds: float

    def delay_seconds(self, retry_number: int, rng: random.Random) -> float:
        """Return the wait before retry ``retry_number`` (1 for the first one).

        Exponential backoff with full jitter: a uniform draw up to
        ``base * 2 ** (retry_number - 1)``, capped at ``max_delay_seconds``.
        """
        ceiling = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (retry_number - 1))
        return rng.uniform(0.0, ceiling)


# The request path waits at most 0.175 s in total for unprocessed keys (3 retries).
READ_RETRY = RetryPolicy(max_attempts=4, base_delay_seconds=0.025, max_delay_seconds=0.2)
# The builder can wait: up to about 16 s per batch (9 retries) before it gives up.
WRITE_RETRY = RetryPolicy(max_attempts=10, base_delay_seconds=0.05, max_delay_seconds=5.0)


@dataclass(frozen=True)
class ModelPointer:
    """Content of the CURRENT item: the version readers use and when it was built."""

    version: str
    built_at: str
    # Epoch seconds at which the version's items expire; None if not recorded.
    model_expires_at: int | None = None


# --------------------------------------------------------------------------- keys and settings


def new_version_id(now: datetime | None = None) -> str:
    """Return a version id such as ``20250131T120000123Z-3fa9c1``: UTC time to the millisecond,
    then 6 random hex digits.

    Ids sort by build time, to the millisecond; the suffix keeps two builds of
    one millisecond apart, in an arbitrary order.
    """
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%S}{moment.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def item_key(version: str, item_id: str) -> str:
    return f"v#{version}#item#{item_id}"


def popular_key(version: str) -> str:
    return f"v#{version}#popular"


def meta_key(version: str) -> str:
    return f"v#{version}#meta"


def cache_seconds_from_env(environ: Mapping[str, str] | None = None) -> float:
    """Read MODEL_CACHE_SECONDS (default 60, 0 turns the cache off, at most 3600)."""
    env = os.environ if environ is None else environ
    return read_float(env, MODEL_CACHE_SECONDS, DEFAULT_CACHE_SECONDS, 0.0, 3600.0)


def retention_hours_from_env(environ: Mapping[str, str] | None = None) -> float:
    """Read MODEL_RETENTION_HOURS (default 72, from 1 to 8760).

    The model's items expire this long after their build, so builds must run
    more often than that.
    """
    env = os.environ if environ is None else environ
    return read_float(env, MODEL_RETENTION_HOURS, DEFAULT_RETENTION_HOURS, 1.0, 8760.0)


# --------------------------------------------------------------------------- errors


def _store_error(error: Exception, operation: str, table_name: str) -> StoreError:
    """Translate a botocore exception into the store's exception, logging it."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "Unknown")
        request_id = error.response.get("ResponseMetadata", {}).get("RequestId")
        logger.error(
            f"DynamoDB {operation} failed",
            extra={"error_code": code, "table": table_name, "dynamodb_request_id": request_id},
        )
        if code in RETRYABLE_ERROR_CODES:
            return StoreUnavailableError(f"DynamoDB is unavailable: {code}", error_code=code)
        if code == "ResourceNotFoundException":
            return StoreError(
                f"DynamoDB table {table_name!r} was not found ({operation}); create it from"
                " template.yaml or fix the table name setting",
                error_code=code,
            )
        return StoreError(f"DynamoDB {operation} failed: {code}", error_code=code)
    if isinstance(error, (BotoConnectionError, ReadTimeoutError)):
        logger.error(
            "DynamoDB timed out or was unreachable",
            extra={"error": str(error), "table": table_name},
        )
        return StoreUnavailableError(
            f"DynamoDB timed out or was unreachable: {type(error).__name__}",
            error_code=type(error).__name__,
        )
    logger.error("DynamoDB client failed", extra={"error": str(error), "table": table_name})
    return StoreError(
        f"DynamoDB client failed: {type(error).__name__}", error_code=type(error).__name__
    )


def _call(
    operation: str, table_name: str, method: Callable[..., dict[str, Any]], **request: Any
) -> dict[str, Any]:
    try:
        return method(**request)
    except (ClientError, BotoCoreError) as error:
        raise _store_error(error, operation, table_name) from error


def _capacity(response: Mapping[str, Any]) -> float:
    """Sum the CapacityUnits of a response; batch calls return a list, single calls a map."""
    consumed = response.get("ConsumedCapacity")
    if isinstance(consumed, list):
        return float(sum(entry.get("CapacityUnits", 0.0) for entry in consumed))
    if isinstance(consumed, dict):
        return float(consumed.get("CapacityUnits", 0.0))
    return 0.0


# --------------------------------------------------------------------------- request path


class ModelStore:
    """Reads the current model version, as the request path needs it.

    One instance per container: CURRENT is cached for ``cache_seconds``, and
    BatchGetItem requests run concurrently on ``executor``.
    """

    def __init__(
        self,
        client: Any,
        table_name: str,
        executor: ThreadPoolExecutor,
        *,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        retry: RetryPolicy = READ_RETRY,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._table_name = table_name
        self._executor = executor
        self._cache_seconds = cache_seconds
        self._retry = retry
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._cached: tuple[float, ModelPointer | None] | None = None

    def current_version(self, stats: ReadStats) -> ModelPointer | None:
        """Return the CURRENT pointer, None when no build has finished yet.

        The result, None included, is reused for ``cache_seconds``, so a new
        version reaches a warm container within that time.
        """
        now = self._clock()
        cached = self._fresh_cache(now)
        if cached is not None:
            return cached[1]

        item = self._get_item(CURRENT_KEY, ("version", "built_at", "model_expires_at"), stats)
        pointer: ModelPointer | None = None
        if item is not None:
            try:
                expires = item.get("model_expires_at", {}).get("N")
                pointer = ModelPointer(
                    version=item["version"]["S"],
                    built_at=item.get("built_at", {}).get("S", ""),
                    model_expires_at=int(expires) if expires is not None else None,
                )
            except (KeyError, ValueError) as error:
                raise StoreError(
                    f"the CURRENT item of table {self._table_name!r} is malformed ({error!r});"
                    " rebuild the model to rewrite it"
                ) from error
        with self._lock:
            self._cached = (now, pointer)
        return pointer

    def current_version_soon(self, stats: ReadStats) -> Future[ModelPointer | None]:
        """Start ``current_version`` on the executor, so that it overlaps another read.

        A cached pointer comes back as a finished future without using a thread.
        """
        cached = self._fresh_cache(self._clock())
        if cached is None:
            return self._executor.submit(self.current_version, stats)
        done: Future[ModelPointer | None] = Future()
        done.set_result(cached[1])
        return done

    def _fresh_cache(self, now: float) -> tuple[float, ModelPointer | None] | None:
        """Return the cached (time, pointer) pair while it is younger than ``cache_seconds``."""
        with self._lock:
            cached = self._cached
        if cached is not None and now - cached[0] < self._cache_seconds:
            return cached
        return None

    def neighbour_lists(
        self, version: str, item_ids: Iterable[str], stats: ReadStats
    ) -> dict[str, list[tuple[str, float]]]:
        """Read the neighbour lists of ``item_ids``; items absent from the version are absent here.

        Keys go out in BatchGetItem requests of at most 100, concurrently on the
        executor, so call this from outside the executor's own threads.
        """
        unique = list(dict.fromkeys(item_ids))
        if not unique:
            return {}
        stats.rounds += 1
        chunks = [
            unique[start : start + MAX_BATCH_GET_KEYS]
            for start in range(0, len(unique), MAX_BATCH_GET_KEYS)
        ]
        futures = [
            self._executor.submit(self._batch_get, version, chunk, stats) for chunk in chunks
        ]

        results: dict[str, list[tuple[str, float]]] = {}
        first_error: StoreError | None = None
        # Every request is awaited before an error is raised, so none keeps
        # running for a request that already failed.
        for future in futures:
            try:
                results.update(future.result())
            except StoreError as error:
                first_error = first_error or error
        if first_error is not None:
            raise first_error
        return results

    def similar_items(
        self, version: str, item_id: str, stats: ReadStats
    ) -> list[tuple[str, float]] | None:
        """Return one item's neighbour list, or None when the item is not in the version."""
        item = self._get_item(item_key(version, item_id), ("neighbours",), stats)
        if item is None:
            return None
        return self._decode(item, item_id)

    def popular_items(self, version: str, stats: ReadStats) -> list[tuple[str, int]]:
        """Return the version's most popular items as (item_id, users), most first."""
        item = self._get_item(popular_key(version), ("items",), stats)
        if item is None:
            return []
        try:
            return decode_popular(item.get("items", {}).get("S"))
        except ModelFormatError as error:
            raise StoreError(
                f"model version {version!r} has an invalid popular list ({error}); rebuild the model"
            ) from error

    def version_meta(self, version: str, stats: ReadStats) -> dict[str, str | float] | None:
        """Return the meta item of a version (built_at, config, counts), None if absent."""
        item = self._get_item(meta_key(version), None, stats)
        if item is None:
            return None
        meta: dict[str, str | float] = {}
        for name, value in item.items():
            if name == KEY_ATTRIBUTE:
                continue
            if "S" in value:
                meta[name] = value["S"]
            elif "N" in value:
                meta[name] = float(value["N"])
        return meta

    # ----------------------------------------------------------------------- internals

    def _get_item(
        self, key: str, attributes: Sequence[str] | None, stats: ReadStats
    ) -> dict[str, Any] | None:
        """Read one item (only ``attributes`` when given); return None when it does not exist."""
        request: dict[str, Any] = {
            "TableName": self._table_name,
            "Key": {KEY_ATTRIBUTE: {"S": key}},
            "ConsistentRead": False,
            "ReturnConsumedCapacity": "TOTAL",
        }
        if attributes is not None:
            # Placeholders for every name, because several (items, version) may be
            # DynamoDB reserved words.
            names = {f"#a{position}": name for position, name in enumerate(attributes)}
            request["ProjectionExpression"] = ", ".join(names)
            request["ExpressionAttributeNames"] = names
        response = _call("GetItem", self._table_name, self._client.get_item, **request)
        item = response.get("Item")
        stats.record_page(1 if item else 0, _capacity(response))
        return item

    def _batch_get(
        self, version: str, item_ids: Sequence[str], stats: ReadStats
    ) -> dict[str, list[tuple[str, float]]]:
        prefix = item_key(version, "")
        keys: list[dict[str, Any]] = [
            {KEY_ATTRIBUTE: {"S": prefix + item_id}} for item_id in item_ids
        ]
        results: dict[str, list[tuple[str, float]]] = {}
        attempt = 1
        while True:
            request = {
                self._table_name: {
                    "Keys": keys,
                    "ConsistentRead": False,
                    "ProjectionExpression": "#pk, neighbours",
                    "ExpressionAttributeNames": {"#pk": KEY_ATTRIBUTE},
                }
            }
            response = _call(
                "BatchGetItem",
                self._table_name,
                self._client.batch_get_item,
                RequestItems=request,
                ReturnConsumedCapacity="TOTAL",
            )
            items = response.get("Responses", {}).get(self._table_name, [])
            stats.record_page(len(items), _capacity(response), operation="batch_get_item")
            for item in items:
                item_id = item[KEY_ATTRIBUTE]["S"][len(prefix) :]
                results[item_id] = self._decode(item, item_id)

            keys = response.get("UnprocessedKeys", {}).get(self._table_name, {}).get("Keys", [])
            if not keys:
                return results
            if attempt >= self._retry.max_attempts:
                logger.error(
                    "Model keys left unprocessed",
                    extra={
                        "unprocessed": len(keys),
                        "attempts": attempt,
                        "table": self._table_name,
                    },
                )
                raise StoreUnavailableError(
                    f"{len(keys)} model keys stayed unprocessed after {attempt} BatchGetItem"
                    f" attempts on table {self._table_name!r}; retry later",
                    error_code="UnprocessedKeys",
                )
            delay = self._retry.delay_seconds(attempt, self._rng)
            logger.info(
                "Retrying unprocessed model keys",
                extra={
                    "unprocessed": len(keys),
                    "attempt": attempt + 1,
                    "delay_s": round(delay, 3),
                },
            )
            self._sleep(delay)
            attempt += 1

    def _decode(self, item: Mapping[str, Any], item_id: str) -> list[tuple[str, float]]:
        try:
            return decode_neighbours(item.get("neighbours", {}).get("S"))
        except ModelFormatError as error:
            raise StoreError(
                f"model item {item_id!r} has an invalid neighbours attribute ({error});"
                " rebuild the model"
            ) from error


# --------------------------------------------------------------------------- builder: writes


@dataclass
class WriteStats:
    """Counts and capacity of writing one version. Safe to update from several threads."""

    items_written: int = 0
    batch_calls: int = 0
    unprocessed_retries: int = 0
    consumed_capacity: float = 0.0
    # UTF-8 bytes of the encoded neighbour lists, the bulk of the model's size.
    neighbour_bytes: int = 0
    # Items whose neighbour list was cut to fit the item size limit.
    truncated_items: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_call(self, written: int, capacity: float, retried: bool) -> None:
        with self._lock:
            self.batch_calls += 1
            self.items_written += written
            self.consumed_capacity += capacity
            if retried:
                self.unprocessed_retries += 1

    def as_dict(self) -> dict[str, float | int]:
        return {
            "items_written": self.items_written,
            "batch_calls": self.batch_calls,
            "unprocessed_retries": self.unprocessed_retries,
            "write_capacity": round(self.consumed_capacity, 3),
            "neighbour_bytes": self.neighbour_bytes,
            "truncated_items": self.truncated_items,
        }


def _attribute(value: str | float) -> dict[str, str]:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"model attributes are strings or numbers, got {value!r}")
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"DynamoDB numbers must be finite, got {value!r}")
    return {"N": repr(value) if isinstance(value, float) else str(value)}


class ModelWriter:
    """Writes one model version with BatchWriteItem, then points CURRENT at it.

    Up to ``concurrency`` BatchWriteItem requests run at once. Items returned
    in UnprocessedItems are retried with backoff; any left after
    ``retry.max_attempts`` calls raise StoreUnavailableError.
    """

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        concurrency: int = 4,
        retry: RetryPolicy = WRITE_RETRY,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an integer of at least 1, got {concurrency!r}")
        self._client = client
        self._table_name = table_name
        self._concurrency = concurrency
        self._retry = retry
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()

    def write_version(
        self,
        version: str,
        items: Iterable[ModelItem],
        popular: Sequence[tuple[str, int]],
        meta: Mapping[str, str | float],
        expires_at: int,
    ) -> WriteStats:
        """Write every item of a version, then its popular list and meta item, in batches of 25.

        ``items`` is consumed lazily, so rows can be computed while earlier
        batches are in flight. CURRENT is not touched: call ``publish`` after.
        """
        stats = WriteStats()
        ttl = _attribute(int(expires_at))
        started = time.monotonic()

        def model_items() -> Iterator[dict[str, Any]]:
            for entry in items:
                encoded, kept = encode_neighbours(entry.neighbours)
                stats.neighbour_bytes += len(encoded.encode("utf-8"))
                if kept < len(entry.neighbours):
                    stats.truncated_items += 1
                    logger.warning(
                        "Neighbour list cut to fit the item size limit",
                        extra={
                            "item_id": entry.item_id,
                            "kept": kept,
                            "computed": len(entry.neighbours),
                        },
                    )
                yield {
                    KEY_ATTRIBUTE: {"S": item_key(version, entry.item_id)},
                    "popularity": _attribute(entry.popularity),
                    "neighbours": {"S": encoded},
                    TTL_ATTRIBUTE: ttl,
                }
            yield {
                KEY_ATTRIBUTE: {"S": popular_key(version)},
                "items": {"S": encode_popular(popular)},
                TTL_ATTRIBUTE: ttl,
            }
            yield {
                KEY_ATTRIBUTE: {"S": meta_key(version)},
                **{name: _attribute(value) for name, value in meta.items()},
                TTL_ATTRIBUTE: ttl,
            }

        self._write_all(model_items(), stats)
        logger.info(
            "Model version written",
            extra={
                "version": version,
                **stats.as_dict(),
                "elapsed_s": round(time.monotonic() - started, 3),
            },
        )
        return stats

    def publish(self, version: str, built_at: str, expires_at: int) -> None:
        """Point CURRENT at ``version`` unless it already points at a newer one.

        Version ids sort by build time, so the condition keeps a slow build from
        replacing the model of a later one; StaleVersionError is raised then.
        """
        request = {
            "TableName": self._table_name,
            "Item": {
                KEY_ATTRIBUTE: {"S": CURRENT_KEY},
                "version": {"S": version},
                "built_at": {"S": built_at},
                "model_expires_at": _attribute(int(expires_at)),
            },
            "ConditionExpression": "attribute_not_exists(#pk) OR #version < :version",
            "ExpressionAttributeNames": {"#pk": KEY_ATTRIBUTE, "#version": "version"},
            "ExpressionAttributeValues": {":version": {"S": version}},
        }
        try:
            self._client.put_item(**request)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise StaleVersionError(
                    f"CURRENT in table {self._table_name!r} already points at a version newer"
                    f" than {version!r}; this build was written but not published",
                    error_code="ConditionalCheckFailedException",
                ) from error
            raise _store_error(error, "PutItem", self._table_name) from error
        except BotoCoreError as error:
            raise _store_error(error, "PutItem", self._table_name) from error
        logger.info("CURRENT now points at the new version", extra={"version": version})

    # ----------------------------------------------------------------------- internals

    def _write_all(self, items: Iterator[dict[str, Any]], stats: WriteStats) -> None:
        # At most twice `concurrency` batches wait or run at once, so a long
        # iterator is never held in memory in full.
        max_pending = 2 * self._concurrency
        pending: deque[Future[None]] = deque()
        batch: list[dict[str, Any]] = []
        with ThreadPoolExecutor(
            max_workers=self._concurrency, thread_name_prefix="model-write"
        ) as executor:
            try:
                for item in items:
                    batch.append({"PutRequest": {"Item": item}})
                    if len(batch) == MAX_BATCH_WRITE_ITEMS:
                        pending.append(executor.submit(self._write_batch, batch, stats))
                        batch = []
                        while len(pending) >= max_pending:
                            pending.popleft().result()
                if batch:
                    pending.append(executor.submit(self._write_batch, batch, stats))
                while pending:
                    pending.popleft().result()
            except BaseException:
                for future in pending:
                    future.cancel()
                raise

    def _write_batch(self, requests: list[dict[str, Any]], stats: WriteStats) -> None:
        attempt = 1
        while True:
            response = _call(
                "BatchWriteItem",
                self._table_name,
                self._client.batch_write_item,
                RequestItems={self._table_name: requests},
                ReturnConsumedCapacity="TOTAL",
            )
            unprocessed = response.get("UnprocessedItems", {}).get(self._table_name, [])
            stats.record_call(len(requests) - len(unprocessed), _capacity(response), attempt > 1)
            if not unprocessed:
                return
            if attempt >= self._retry.max_attempts:
                logger.error(
                    "Model items left unprocessed",
                    extra={"unprocessed": len(unprocessed), "attempts": attempt},
                )
                raise StoreUnavailableError(
                    f"{len(unprocessed)} model items stayed unprocessed after {attempt}"
                    f" BatchWriteItem attempts on table {self._table_name!r} (throttled?);"
                    " the version was not published, run the build again later",
                    error_code="UnprocessedItems",
                )
            with self._rng_lock:
                delay = self._retry.delay_seconds(attempt, self._rng)
            logger.info(
                "Retrying unprocessed model items",
                extra={
                    "unprocessed": len(unprocessed),
                    "attempt": attempt + 1,
                    "delay_s": round(delay, 3),
                },
            )
            self._sleep(delay)
            requests = unprocessed
            attempt += 1


# --------------------------------------------------------------------------- builder: Scan


_TOKEN_TOLERANCE = 1e-9
_MIN_SLEEP_SECONDS = 0.001


class TokenBucket:
    """Rate limit on consumed capacity: ``rate`` units per second, bursts up to ``burst``.

    A caller waits until the balance is not negative, sends its request, then
    subtracts what the request consumed, which DynamoDB reports only after the
    fact. Over any interval of t seconds the capacity of the requests sent
    therefore stays within ``burst + rate * t`` plus one request per caller in
    flight.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
            raise ValueError(
                f"rate must be a positive number of capacity units per second, got {rate!r}"
            )
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else self.rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._updated = clock()
        self.waited_seconds = 0.0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def wait(self) -> None:
        """Block until the balance is at least zero."""
        while True:
            with self._lock:
                self._refill()
                # Rounding in the refill can leave a balance such as -1e-16,
                # whose sleep would be too short to move the clock. The
                # tolerance accepts such a balance, and the floor keeps every
                # sleep long enough to move a clock.
                if self._tokens >= -_TOKEN_TOLERANCE:
                    return
                delay = max(-self._tokens / self.rate, _MIN_SLEEP_SECONDS)
                self.waited_seconds += delay
            self._sleep(delay)

    def consume(self, amount: float) -> None:
        """Subtract the capacity a request consumed; the balance may go negative."""
        with self._lock:
            self._refill()
            self._tokens -= amount


_SEGMENT_DONE = object()


def scan_interactions(
    client: Any,
    table_name: str,
    segments: int,
    read_capacity_per_second: float,
    *,
    stats: ReadStats | None = None,
    page_size: int = DEFAULT_SCAN_PAGE_SIZE,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[InteractionRecord]:
    """Yield every row of the interactions table, read by a parallel, rate-limited Scan.

    One thread per segment (Segment/TotalSegments) pages to the end of its
    segment with eventually consistent reads, projecting the five attributes
    the model needs. All threads share one TokenBucket of
    ``read_capacity_per_second``, so the Scan leaves the rest of the table's
    capacity to the request path. Rows come in no particular order. A row
    without a timestamp gets 0, one without interaction_type "interaction".
    """
    if (
        isinstance(segments, bool)
        or not isinstance(segments, int)
        or not 1 <= segments <= MAX_SCAN_SEGMENTS
    ):
        raise ValueError(
            f"segments must be an integer from 1 to {MAX_SCAN_SEGMENTS}, got {segments!r}"
        )
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise ValueError(f"page_size must be an integer of at least 1, got {page_size!r}")
    limiter = TokenBucket(read_capacity_per_second, clock=clock, sleep=sleep)
    read_stats = stats if stats is not None else ReadStats()
    pages: queue.Queue[object] = queue.Queue(maxsize=4 * segments)
    stop = threading.Event()

    def put(message: object) -> bool:
        # A bounded queue with a stop check, so a consumer that went away
        # never leaves a thread blocked on put.
        while not stop.is_set():
            try:
                pages.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def scan_segment(segment: int) -> None:
        request: dict[str, Any] = {
            "TableName": table_name,
            "Segment": segment,
            "TotalSegments": segments,
            "Limit": page_size,
            "ConsistentRead": False,
            "ProjectionExpression": SCAN_PROJECTION,
            "ExpressionAttributeNames": {"#ts": "timestamp"},
            "ReturnConsumedCapacity": "TOTAL",
        }
        try:
            while not stop.is_set():
                limiter.wait()
                page = _call("Scan", table_name, client.scan, **request)
                capacity = _capacity(page)
                limiter.consume(capacity)
                items = page.get("Items", [])
                read_stats.record_page(len(items), capacity)
                if not put([_to_record(item) for item in items]):
                    return
                last_key = page.get("LastEvaluatedKey")
                if not last_key:
                    break
                request["ExclusiveStartKey"] = last_key
        except BaseException as error:  # noqa: BLE001  (handed to the consumer, which re-raises it)
            put(error)
        finally:
            put(_SEGMENT_DONE)

    started = clock()
    threads = [
        threading.Thread(target=scan_segment, args=(segment,), name=f"scan-{segment}", daemon=True)
        for segment in range(segments)
    ]
    for thread in threads:
        thread.start()
    finished = 0
    try:
        while finished < segments:
            message = pages.get()
            if message is _SEGMENT_DONE:
                finished += 1
            elif isinstance(message, BaseException):
                raise message
            else:
                yield from message  # type: ignore[misc]
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        logger.info(
            "Scan finished" if finished == segments else "Scan stopped",
            extra={
                "table": table_name,
                "segments": segments,
                **read_stats.as_dict(),
                "rate_limit_wait_s": round(limiter.waited_seconds, 3),
                "elapsed_s": round(clock() - started, 3),
            },
        )


def _to_record(item: Mapping[str, Any]) -> InteractionRecord:
    weight = item.get("weight", {}).get("N")
    timestamp = item.get("timestamp", {}).get("N")
    return InteractionRecord(
        user_id=item["user_id"]["S"],
        item_id=item["item_id"]["S"],
        interaction_type=item.get("interaction_type", {}).get("S", "interaction"),
        timestamp=int(float(timestamp)) if timestamp is not None else 0,
        weight=float(weight) if weight is not None else None,
    )
