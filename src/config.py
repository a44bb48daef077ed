"""Configuration of the function, read once per container from environment variables.

Every variable the function reads is named here with its default. Invalid values
raise ``ConfigurationError`` naming the variable, the value and the accepted range.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from recommender import ModelConfig

TABLE_NAME = "TABLE_NAME"
USER_HISTORY_INDEX = "USER_HISTORY_INDEX"
ITEM_USERS_INDEX = "ITEM_USERS_INDEX"

# Request budgets: together they bound the DynamoDB reads of one request.
MAX_HISTORY_ITEMS = "MAX_HISTORY_ITEMS"
MAX_SEED_ITEMS = "MAX_SEED_ITEMS"
MAX_USERS_PER_ITEM = "MAX_USERS_PER_ITEM"
MAX_NEIGHBOURS = "MAX_NEIGHBOURS"
MAX_ITEMS_PER_NEIGHBOUR = "MAX_ITEMS_PER_NEIGHBOUR"

MAX_CONCURRENT_QUERIES = "MAX_CONCURRENT_QUERIES"
DYNAMODB_MAX_ATTEMPTS = "DYNAMODB_MAX_ATTEMPTS"
DYNAMODB_CONNECT_TIMEOUT_SECONDS = "DYNAMODB_CONNECT_TIMEOUT_SECONDS"
DYNAMODB_READ_TIMEOUT_SECONDS = "DYNAMODB_READ_TIMEOUT_SECONDS"

SIMILARITY_ALPHA = "SIMILARITY_ALPHA"
SIMILARITY_BETA = "SIMILARITY_BETA"
USER_WEIGHT_EXPONENT = "USER_WEIGHT_EXPONENT"

DEFAULT_USER_HISTORY_INDEX = "UserHistoryIndex"
DEFAULT_ITEM_USERS_INDEX = "ItemUsersIndex"

CORS_ALLOW_ORIGIN = "CORS_ALLOW_ORIGIN"
METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"
DEFAULT_METRICS_NAMESPACE = "Recommendations"

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
MAX_EXCLUDED_ITEMS = 100
# DynamoDB's maximum size of a sort key value, in UTF-8 bytes.
MAX_ITEM_ID_BYTES = 1024


class ConfigurationError(ValueError):
    """An environment variable is missing or holds an invalid value."""


@dataclass(frozen=True)
class Budgets:
    """Upper bounds on what one request reads, whatever the table size.

    - ``max_history_items``: newest interactions of the user read (and excluded
      from the results).
    - ``max_seed_items``: newest of those used to find candidates.
    - ``max_users_per_item``: newest users read per seed item from the item index.
    - ``max_neighbours``: users whose histories are read, chosen by overlap.
    - ``max_items_per_neighbour``: newest interactions read per neighbour.

    One request therefore reads at most ``max_history_items + max_seed_items *
    max_users_per_item + max_neighbours * max_items_per_neighbour`` index entries
    in ``1 + max_seed_items + max_neighbours`` Query calls (plus extra pages).
    """

    max_history_items: int = 500
    max_seed_items: int = 50
    max_users_per_item: int = 50
    max_neighbours: int = 100
    max_items_per_neighbour: int = 200

    def max_items_read(self) -> int:
        return (
            self.max_history_items
            + self.max_seed_items * self.max_users_per_item
            + self.max_neighbours * self.max_items_per_neighbour
        )


@dataclass(frozen=True)
class Settings:
    table_name: str
    user_history_index: str
    item_users_index: str
    budgets: Budgets
    model: ModelConfig
    max_concurrent_queries: int = 16
    dynamodb_max_attempts: int = 4
    dynamodb_connect_timeout_seconds: float = 1.0
    dynamodb_read_timeout_seconds: float = 2.0


def _read_int(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _read_float(environ: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be between {low} and {high}, got {value}")
    return value


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``environ`` (default ``os.environ``)."""
    env = os.environ if environ is None else environ

    table_name = env.get(TABLE_NAME, "").strip()
    if not table_name:
        raise ConfigurationError(f"{TABLE_NAME} is not set: set it to the interactions table name")

    defaults = Budgets()
    budgets = Budgets(
        max_history_items=_read_int(env, MAX_HISTORY_ITEMS, defaults.max_history_items, 1, 10_000),
        max_seed_items=_read_int(env, MAX_SEED_ITEMS, defaults.max_seed_items, 1, 1_000),
        max_users_per_item=_read_int(env, MAX_USERS_PER_ITEM, defaults.max_users_per_item, 1, 10_000),
        max_neighbours=_read_int(env, MAX_NEIGHBOURS, defaults.max_neighbours, 1, 10_000),
        max_items_per_neighbour=_read_int(
            env, MAX_ITEMS_PER_NEIGHBOUR, defaults.max_items_per_neighbour, 1, 10_000
        ),
    )
    if budgets.max_seed_items > budgets.max_history_items:
        raise ConfigurationError(
            f"{MAX_SEED_ITEMS} ({budgets.max_seed_items}) must not exceed "
            f"{MAX_HISTORY_ITEMS} ({budgets.max_history_items})"
        )

    model_defaults = ModelConfig()
    model = ModelConfig(
        alpha=_read_float(env, SIMILARITY_ALPHA, model_defaults.alpha, 0.0, 2.0),
        beta=_read_float(env, SIMILARITY_BETA, model_defaults.beta, 0.0, 2.0),
        user_weight_exponent=_read_float(
            env, USER_WEIGHT_EXPONENT, model_defaults.user_weight_exponent, 0.0, 2.0
        ),
    )

    return Settings(
        table_name=table_name,
        user_history_index=env.get(USER_HISTORY_INDEX, "").strip() or DEFAULT_USER_HISTORY_INDEX,
        item_users_index=env.get(ITEM_USERS_INDEX, "").strip() or DEFAULT_ITEM_USERS_INDEX,
        budgets=budgets,
        model=model,
        max_concurrent_queries=_read_int(env, MAX_CONCURRENT_QUERIES, 16, 1, 256),
        dynamodb_max_attempts=_read_int(env, DYNAMODB_MAX_ATTEMPTS, 4, 1, 10),
        dynamodb_connect_timeout_seconds=_read_float(
            env, DYNAMODB_CONNECT_TIMEOUT_SECONDS, 1.0, 0.1, 60.0
        ),
        dynamodb_read_timeout_seconds=_read_float(env, DYNAMODB_READ_TIMEOUT_SECONDS, 2.0, 0.1, 60.0),
    )
