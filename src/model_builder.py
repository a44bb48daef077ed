"""Lambda handler of the model builder, run on a schedule: Scan, compute, write a version, flip CURRENT.

1. Scan the interactions table (parallel, rate-limited, see ``model_store``)
   and group the rows by user.
2. Index the log and compute each item's neighbours (``item_model``).
3. Write the new version's items, then point CURRENT at it. A build that
   fails or times out before step 3 ends leaves CURRENT on the previous
   version; its partial items expire with the TTL.

Settings come from environment variables, see ``load_builder_settings``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from config import ConfigurationError, load_settings, read_int
from interaction_store import ReadStats, StoreError
from item_model import (
    DEFAULT_NEIGHBOURS_PER_ITEM,
    ITEM_MODEL_EXPONENTS,
    MAX_NEIGHBOURS_PER_ITEM,
    ItemModel,
    group_by_user,
    similarity_config,
)
from model_store import (
    MODEL_TABLE_NAME,
    ModelWriter,
    new_version_id,
    retention_hours_from_env,
    scan_interactions,
)
from recommender import ModelConfig

logger = Logger()

TABLE_NAME = "TABLE_NAME"
BUILDER_READ_CAPACITY_PER_SECOND = "BUILDER_READ_CAPACITY_PER_SECOND"
BUILDER_SCAN_SEGMENTS = "BUILDER_SCAN_SEGMENTS"
BUILDER_WRITE_CONCURRENCY = "BUILDER_WRITE_CONCURRENCY"
MODEL_NEIGHBOURS_PER_ITEM = "MODEL_NEIGHBOURS_PER_ITEM"
MODEL_MAX_ITEMS_PER_USER = "MODEL_MAX_ITEMS_PER_USER"

DEFAULT_READ_CAPACITY_PER_SECOND = 1000.0
DEFAULT_SCAN_SEGMENTS = 4
DEFAULT_WRITE_CONCURRENCY = 4


@dataclass(frozen=True)
class BuilderSettings:
    """Settings of one build.

    - ``read_capacity_per_second``: read capacity units per second the Scan may
      consume, summed over its segments.
    - ``scan_segments``: parallel Scan segments, one thread each.
    - ``neighbours_per_item``: N, the neighbours kept per item.
    - ``max_items_per_user``: each user's newest items used, None for all
      (see ``item_model.group_by_user``).
    - ``retention_hours``: the version's items expire this long after the build.
    - ``write_concurrency``: BatchWriteItem requests in flight at once.
    - ``model``: the similarity config; alpha, beta and q come from the same
      variables as the request path's (SIMILARITY_ALPHA, SIMILARITY_BETA,
      USER_WEIGHT_EXPONENT).
    """

    table_name: str
    model_table_name: str
    read_capacity_per_second: float = DEFAULT_READ_CAPACITY_PER_SECOND
    scan_segments: int = DEFAULT_SCAN_SEGMENTS
    neighbours_per_item: int = DEFAULT_NEIGHBOURS_PER_ITEM
    max_items_per_user: int | None = None
    retention_hours: float = 72.0
    write_concurrency: int = DEFAULT_WRITE_CONCURRENCY
    model: ModelConfig = field(default_factory=similarity_config)


def _read_optional_int(environ: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    """Read an integer variable that has no default: None when unset."""
    if not environ.get(name, "").strip():
        return None
    return read_int(environ, name, low, low, high)


def _required(environ: Mapping[str, str], name: str, what: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"{name} is not set: set it to the {what} table name")
    return value


def load_builder_settings(environ: Mapping[str, str] | None = None) -> BuilderSettings:
    """Build the settings from ``environ`` (default ``os.environ``).

    Variables: TABLE_NAME and MODEL_TABLE_NAME (required),
    BUILDER_READ_CAPACITY_PER_SECOND (default 1000), BUILDER_SCAN_SEGMENTS (4),
    BUILDER_WRITE_CONCURRENCY (4), MODEL_NEIGHBOURS_PER_ITEM (100),
    MODEL_MAX_ITEMS_PER_USER (unset: all), MODEL_RETENTION_HOURS (72), and the
    request path's SIMILARITY_ALPHA, SIMILARITY_BETA and USER_WEIGHT_EXPONENT.
    Raises ConfigurationError naming the variable and the accepted range.
    """
    env = os.environ if environ is None else environ
    table_name = _required(env, TABLE_NAME, "interactions")
    model_table_name = _required(env, MODEL_TABLE_NAME, "model")

    raw_capacity = env.get(BUILDER_READ_CAPACITY_PER_SECOND, "").strip()
    read_capacity = DEFAULT_READ_CAPACITY_PER_SECOND
    if raw_capacity:
        try:
            read_capacity = float(raw_capacity)
        except ValueError:
            raise ConfigurationError(
                f"{BUILDER_READ_CAPACITY_PER_SECOND} must be a number, got {raw_capacity!r}"
            ) from None
        if not 1 <= read_capacity <= 1_000_000:
            raise ConfigurationError(
                f"{BUILDER_READ_CAPACITY_PER_SECOND} must be between 1 and 1000000 read capacity"
                f" units per second, got {raw_capacity!r}"
            )

    neighbours = read_int(
        env, MODEL_NEIGHBOURS_PER_ITEM, DEFAULT_NEIGHBOURS_PER_ITEM, 1, MAX_NEIGHBOURS_PER_ITEM
    )
    # load_settings reads the exponents with the request path's names and ranges;
    # unset ones take the item-based form's own defaults.
    base = load_settings({**ITEM_MODEL_EXPONENTS, **env}).model
    return BuilderSettings(
        table_name=table_name,
        model_table_name=model_table_name,
        read_capacity_per_second=read_capacity,
        scan_segments=read_int(env, BUILDER_SCAN_SEGMENTS, DEFAULT_SCAN_SEGMENTS, 1, 64),
        neighbours_per_item=neighbours,
        max_items_per_user=_read_optional_int(env, MODEL_MAX_ITEMS_PER_USER, 1, 1_000_000),
        retention_hours=retention_hours_from_env(env),
        write_concurrency=read_int(
            env, BUILDER_WRITE_CONCURRENCY, DEFAULT_WRITE_CONCURRENCY, 1, 64
        ),
        model=similarity_config(neighbours, base),
    )


def model_config_json(config: ModelConfig) -> str:
    """Return the parameters that shape the stored similarities, as the meta item records them."""
    return json.dumps(
        {
            "alpha": config.alpha,
            "beta": config.beta,
            "user_weight_exponent": config.user_weight_exponent,
            "neighbours_per_item": config.neighbours_per_item,
        },
        sort_keys=True,
    )


def build_model(
    client: Any,
    settings: BuilderSettings,
    *,
    now: datetime | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Run one build against ``client`` and return its summary (version, counts, seconds).

    ``published`` is False when the interactions table is empty: CURRENT then
    keeps pointing at the previous version, if any.
    """
    started = clock()
    built_at = (now or datetime.now(UTC)).astimezone(UTC)
    version = new_version_id(built_at)
    expires_at = int(built_at.timestamp() + settings.retention_hours * 3600)
    summary: dict[str, Any] = {
        "version": version,
        "built_at": built_at.isoformat(timespec="milliseconds"),
        "expires_at": expires_at,
        "published": False,
    }
    logger.info(
        "Model build started",
        extra={
            "version": version,
            "table": settings.table_name,
            "model_table": settings.model_table_name,
            "neighbours_per_item": settings.neighbours_per_item,
            "read_capacity_per_second": settings.read_capacity_per_second,
            "scan_segments": settings.scan_segments,
        },
    )

    scan_stats = ReadStats()
    rows = scan_interactions(
        client,
        settings.table_name,
        settings.scan_segments,
        settings.read_capacity_per_second,
        stats=scan_stats,
    )
    user_items = group_by_user(rows, settings.max_items_per_user)
    summary["scan_seconds"] = round(clock() - started, 3)
    summary["scan_pages"] = scan_stats.query_calls
    summary["read_capacity"] = round(scan_stats.consumed_capacity, 3)
    summary["interactions"] = user_items.interactions
    summary["truncated_users"] = user_items.truncated_users

    if user_items.interactions == 0:
        logger.warning(
            "Interactions table is empty; no version published",
            extra={"table": settings.table_name, "version": version},
        )
        summary["total_seconds"] = round(clock() - started, 3)
        return summary

    step = clock()
    model = ItemModel(user_items, settings.model)
    del user_items  # the index keeps its own copy of the histories
    popular = model.most_popular()
    summary["index_seconds"] = round(clock() - step, 3)
    summary["users"] = model.users
    summary["items"] = len(model.item_ids)
    logger.info(
        "Interactions indexed",
        extra={
            "interactions": model.interactions,
            "users": model.users,
            "items": len(model.item_ids),
            "scan_s": summary["scan_seconds"],
            "index_s": summary["index_seconds"],
        },
    )

    step = clock()
    meta = {
        "built_at": summary["built_at"],
        "config": model_config_json(settings.model),
        "interactions": model.interactions,
        "users": model.users,
        "items": len(model.item_ids),
        "truncated_users": model.truncated_users,
        "source_table": settings.table_name,
    }
    writer = ModelWriter(client, settings.model_table_name, concurrency=settings.write_concurrency)
    # Rows are computed lazily while earlier batches are written, so this step
    # times the neighbour computation and the writes together.
    write_stats = writer.write_version(version, model.items(), popular, meta, expires_at)
    summary["compute_and_write_seconds"] = round(clock() - step, 3)
    summary.update(write_stats.as_dict())

    step = clock()
    writer.publish(version, summary["built_at"], expires_at)
    summary["published"] = True
    summary["publish_seconds"] = round(clock() - step, 3)
    summary["total_seconds"] = round(clock() - started, 3)
    logger.info("Model build finished", extra=summary)
    return summary


_client: Any = None


def _dynamodb_client(settings: BuilderSettings) -> Any:
    """Create the DynamoDB client once per container, with a connection per thread."""
    global _client
    if _client is None:
        _client = boto3.client(
            "dynamodb",
            config=Config(
                retries={"mode": "standard", "max_attempts": 8},
                connect_timeout=5,
                read_timeout=30,
                max_pool_connections=settings.scan_segments + settings.write_concurrency + 2,
            ),
        )
    return _client


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Rebuild the model; the scheduled event's content is not used.

    A failed build raises, so that the invocation is marked failed and the
    error metrics and alarms see it.
    """
    try:
        settings = load_builder_settings()
        return build_model(_dynamodb_client(settings), settings)
    except (ConfigurationError, StoreError) as error:
        logger.exception("Model build failed", extra={"error": str(error)})
        raise
