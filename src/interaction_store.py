"""Data access: every DynamoDB call of the request path.

All reads are paginated Queries on the table's two indexes, newest first and
stopped at a budget, with eventually consistent reads (the only kind a global
secondary index offers, and half the price on a local one). Independent Queries
run concurrently on a thread pool shared by the container. boto3 ``ClientError``
and connection errors are translated into ``StoreUnavailableError`` (retry later)
or ``StoreError`` (a fault the caller cannot fix).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError

from config import Settings
from recommender import Interaction

# A child of the handler's Powertools logger: same JSON format and correlation id.
logger = Logger(child=True)

# Error codes that mean "try again later" rather than "this request is wrong".
RETRYABLE_ERROR_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "LimitExceededException",
    }
)

# Largest page one Query may return; DynamoDB also stops each page at 1 MB.
MAX_PAGE_SIZE = 1000
# BatchGetItem takes at most 100 keys per call.
MAX_BATCH_GET_KEYS = 100
MAX_BATCH_GET_ATTEMPTS = 5


class StoreError(Exception):
    """DynamoDB failed in a way that retrying the request will not fix."""

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code


class StoreUnavailableError(StoreError):
    """DynamoDB throttled the request, timed out or was unreachable; retrying may work."""


@dataclass
class ReadStats:
    """DynamoDB usage of one request. Safe to update from several threads."""

    query_calls: int = 0
    batch_get_calls: int = 0
    items_read: int = 0
    consumed_capacity: float = 0.0
    rounds: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_page(self, items: int, capacity: float, operation: str = "query") -> None:
        with self._lock:
            if operation == "batch_get_item":
                self.batch_get_calls += 1
            else:
                self.query_calls += 1
            self.items_read += items
            self.consumed_capacity += capacity

    @property
    def dynamodb_calls(self) -> int:
        return self.query_calls + self.batch_get_calls

    def as_dict(self) -> dict[str, float | int]:
        return {
            "query_calls": self.query_calls,
            "batch_get_calls": self.batch_get_calls,
            "dynamodb_calls": self.dynamodb_calls,
            "items_read": self.items_read,
            "consumed_capacity": round(self.consumed_capacity, 3),
            "rounds": self.rounds,
        }


def create_client(settings: Settings) -> Any:
    """Create the DynamoDB client, once per container.

    The endpoint comes from the standard ``AWS_ENDPOINT_URL_DYNAMODB`` variable
    when set (local servers), as boto3 reads it itself.
    """
    client_config = Config(
        retries={"mode": "standard", "max_attempts": settings.dynamodb_max_attempts},
        connect_timeout=settings.dynamodb_connect_timeout_seconds,
        read_timeout=settings.dynamodb_read_timeout_seconds,
        max_pool_connections=settings.max_concurrent_queries,
    )
    return boto3.client("dynamodb", config=client_config)


class InteractionStore:
    """Reads interactions through the user-history and item-users indexes."""

    def __init__(self, client: Any, settings: Settings, executor: ThreadPoolExecutor) -> None:
        self._client = client
        self._table_name = settings.table_name
        self._user_history_index = settings.user_history_index
        self._item_users_index = settings.item_users_index
        self._executor = executor

    def user_history(self, user_id: str, max_items: int, stats: ReadStats) -> list[Interaction]:
        """Read up to ``max_items`` of the user's newest interactions."""
        stats.rounds += 1
        items = self._query(
            index_name=self._user_history_index,
            key_name="user_id",
            key_value=user_id,
            max_items=max_items,
            projection="item_id, #ts, interaction_type, weight",
            stats=stats,
        )
        return [_to_interaction(item) for item in items]

    def users_of_items(
        self, item_ids: Sequence[str], max_users_per_item: int, stats: ReadStats
    ) -> dict[str, list[str]]:
        """Read up to ``max_users_per_item`` newest users of each item, concurrently."""

        def read_users(item_id: str) -> list[str]:
            items = self._query(
                index_name=self._item_users_index,
                key_name="item_id",
                key_value=item_id,
                max_items=max_users_per_item,
                projection="user_id",
                stats=stats,
            )
            return [item["user_id"]["S"] for item in items]

        stats.rounds += 1
        return self._run_concurrently(read_users, item_ids)

    def item_histories(
        self, user_ids: Sequence[str], max_items_per_user: int, stats: ReadStats
    ) -> dict[str, list[str]]:
        """Read the item ids of up to ``max_items_per_user`` newest interactions of each user."""

        def read_items(user_id: str) -> list[str]:
            items = self._query(
                index_name=self._user_history_index,
                key_name="user_id",
                key_value=user_id,
                max_items=max_items_per_user,
                projection="item_id",
                stats=stats,
            )
            return [item["item_id"]["S"] for item in items]

        stats.rounds += 1
        return self._run_concurrently(read_items, user_ids)

    def interacted_items(self, user_id: str, item_ids: Sequence[str], stats: ReadStats) -> set[str]:
        """Return which of ``item_ids`` the user has an interaction with, from the base table.

        Used when the user's history was read only up to its budget: older
        interactions are then checked by key, so that no seen item is returned.
        Batches of at most 100 keys run concurrently; unprocessed keys are
        retried with backoff.
        """
        stats.rounds += 1
        unique_ids = list(dict.fromkeys(item_ids))
        batches = [
            unique_ids[start : start + MAX_BATCH_GET_KEYS]
            for start in range(0, len(unique_ids), MAX_BATCH_GET_KEYS)
        ]

        def read_batch(batch_key: str) -> list[str]:
            batch = batches[int(batch_key)]
            return self._batch_get_item_ids(user_id, batch, stats)

        found = self._run_concurrently(read_batch, [str(index) for index in range(len(batches))])
        return {item_id for items in found.values() for item_id in items}

    def _batch_get_item_ids(self, user_id: str, item_ids: list[str], stats: ReadStats) -> list[str]:
        keys = [{"user_id": {"S": user_id}, "item_id": {"S": item_id}} for item_id in item_ids]
        request_items: dict[str, Any] = {
            self._table_name: {"Keys": keys, "ProjectionExpression": "item_id", "ConsistentRead": False}
        }
        found: list[str] = []
        for attempt in range(MAX_BATCH_GET_ATTEMPTS):
            page = self._call("batch_get_item", {"RequestItems": request_items, "ReturnConsumedCapacity": "TOTAL"}, "table")
            items = page.get("Responses", {}).get(self._table_name, [])
            capacity = sum(entry.get("CapacityUnits", 0.0) for entry in page.get("ConsumedCapacity", []))
            stats.record_page(len(items), float(capacity), operation="batch_get_item")
            found.extend(item["item_id"]["S"] for item in items)
            request_items = page.get("UnprocessedKeys") or {}
            if not request_items:
                return found
            time.sleep(min(0.05 * 2**attempt, 1.0) * random.random())
        remaining = len(request_items.get(self._table_name, {}).get("Keys", []))
        logger.error("BatchGetItem left keys unprocessed", extra={"unprocessed_keys": remaining})
        raise StoreUnavailableError(
            f"DynamoDB left {remaining} keys unprocessed after {MAX_BATCH_GET_ATTEMPTS} attempts",
            error_code="UnprocessedKeys",
        )

    def _run_concurrently(
        self, read: Callable[[str], list[str]], keys: Iterable[str]
    ) -> dict[str, list[str]]:
        unique_keys = list(dict.fromkeys(keys))
        futures = {key: self._executor.submit(read, key) for key in unique_keys}
        results: dict[str, list[str]] = {}
        first_error: StoreError | None = None
        # Wait for every Query so none is left running against a failed request,
        # then report the first failure: a partial result is never returned.
        for key, future in futures.items():
            try:
                results[key] = future.result()
            except StoreError as error:
                first_error = first_error or error
        if first_error is not None:
            raise first_error
        return results

    def _query(
        self,
        *,
        index_name: str,
        key_name: str,
        key_value: str,
        max_items: int,
        projection: str,
        stats: ReadStats,
    ) -> list[dict[str, Any]]:
        request: dict[str, Any] = {
            "TableName": self._table_name,
            "IndexName": index_name,
            "KeyConditionExpression": "#key = :key",
            "ExpressionAttributeValues": {":key": {"S": key_value}},
            "ScanIndexForward": False,
            "ConsistentRead": False,
            "ProjectionExpression": projection,
            "ReturnConsumedCapacity": "TOTAL",
        }
        names = {"#key": key_name}
        if "#ts" in projection:
            names["#ts"] = "timestamp"
        request["ExpressionAttributeNames"] = names

        collected: list[dict[str, Any]] = []
        while len(collected) < max_items:
            request["Limit"] = min(max_items - len(collected), MAX_PAGE_SIZE)
            page = self._call("query", request, index_name)
            items = page.get("Items", [])
            capacity = page.get("ConsumedCapacity", {}).get("CapacityUnits", 0.0)
            stats.record_page(len(items), float(capacity))
            collected.extend(items)
            last_key = page.get("LastEvaluatedKey")
            if not last_key:
                break
            request["ExclusiveStartKey"] = last_key
        return collected[:max_items]

    def _call(self, operation: str, request: dict[str, Any], index_name: str) -> dict[str, Any]:
        try:
            return getattr(self._client, operation)(**request)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "Unknown")
            request_id = error.response.get("ResponseMetadata", {}).get("RequestId")
            logger.error(
                "DynamoDB call failed",
                extra={
                    "operation": operation,
                    "error_code": code,
                    "index": index_name,
                    "dynamodb_request_id": request_id,
                },
            )
            if code in RETRYABLE_ERROR_CODES:
                raise StoreUnavailableError(f"DynamoDB is unavailable: {code}", error_code=code) from error
            raise StoreError(f"DynamoDB {operation} failed: {code}", error_code=code) from error
        except (BotoConnectionError, ReadTimeoutError) as error:
            logger.error("DynamoDB timed out or was unreachable", extra={"error": str(error), "index": index_name})
            raise StoreUnavailableError(
                f"DynamoDB timed out or was unreachable: {type(error).__name__}", error_code=type(error).__name__
            ) from error
        except BotoCoreError as error:
            logger.error("DynamoDB client failed", extra={"error": str(error), "index": index_name})
            raise StoreError(
                f"DynamoDB client failed: {type(error).__name__}", error_code=type(error).__name__
            ) from error


def _to_interaction(item: dict[str, Any]) -> Interaction:
    weight = item.get("weight", {}).get("N")
    return Interaction(
        item_id=item["item_id"]["S"],
        timestamp=int(float(item["timestamp"]["N"])),
        interaction_type=item.get("interaction_type", {}).get("S", "interaction"),
        weight=float(weight) if weight is not None else None,
    )
