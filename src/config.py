"""Configuration of the function, read once per container from environment variables.

Every variable the function reads is named here with its default. Invalid values
raise ``ConfigurationError`` naming the variable, the value and the accepted range.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from recommender import MAX_NORMALISATION_EXPONENT, MAX_OVERLAP_EXPONENT, ModelConfig

TABLE_NAME = "TABLE_NAME"
USER_HISTORY_INDEX = "USER_HISTORY_INDEX"
ITEM_USERS_INDEX = "ITEM_USERS_INDEX"

# Request budgets: together they bound the DynamoDB reads of one request.
MAX_HISTORY_ITEMS = "MAX_HISTORY_ITEMS"
MAX_SEED_ITEMS = "MAX_SEED_ITEMS"
MAX_USERS_PER_ITEM = "MAX_USERS_PER_ITEM"
MAX_NEIGHBOURS = "MAX_NEIGHBOURS"
MAX_ITEMS_PER_NEIGHBOUR = "MAX_ITEMS_PER_NEIGHBOUR"
MAX_MODEL_SEED_ITEMS = "MAX_MODEL_SEED_ITEMS"

MAX_CONCURRENT_QUERIES = "MAX_CONCURRENT_QUERIES"
DYNAMODB_MAX_ATTEMPTS = "DYNAMODB_MAX_ATTEMPTS"
DYNAMODB_CONNECT_TIMEOUT_SECONDS = "DYNAMODB_CONNECT_TIMEOUT_SECONDS"
DYNAMODB_READ_TIMEOUT_SECONDS = "DYNAMODB_READ_TIMEOUT_SECONDS"

# Model parameters: see recommender.ModelConfig for what each one favours.
SIMILARITY_ALPHA = "SIMILARITY_ALPHA"
SIMILARITY_BETA = "SIMILARITY_BETA"
USER_WEIGHT_EXPONENT = "USER_WEIGHT_EXPONENT"
OVERLAP_EXPONENT = "OVERLAP_EXPONENT"
NEIGHBOURS_PER_ITEM = "NEIGHBOURS_PER_ITEM"
EVENT_WEIGHTS = "EVENT_WEIGHTS"
DEFAULT_EVENT_WEIGHT = "DEFAULT_EVENT_WEIGHT"
RATING_AS_WEIGHT = "RATING_AS_WEIGHT"
HALF_LIFE_DAYS = "HALF_LIFE_DAYS"

# Largest accepted event weight and half-life: larger values are almost
# certainly a unit mistake (a half-life in seconds, a weight in cents).
MAX_EVENT_WEIGHT = 1_000.0
MIN_HALF_LIFE_DAYS = 0.001
MAX_HALF_LIFE_DAYS = 36_500.0
MAX_NEIGHBOURS_PER_ITEM = 100_000

_OFF_WORDS = frozenset({"none", "off"})
_TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
_FALSE_WORDS = frozenset({"false", "0", "no", "off"})

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
    """An environment variable is missing or has an invalid value."""


@dataclass(frozen=True)
class Budgets:
    """Upper bounds on what one request reads, whatever the table size.

    - ``max_history_items``: newest interactions of the user read and excluded
      from the results. Only the newest ``max_seed_items`` (online) or
      ``max_model_seed_items`` (model) of them score, so a high value costs one
      longer Query and makes the exclusion complete for nearly every user.
    - ``max_seed_items``: newest of those used to find candidates.
    - ``max_users_per_item``: newest users read per seed item from the item index.
    - ``max_neighbours``: users whose histories are read, chosen by overlap.
    - ``max_items_per_neighbour``: newest interactions read per neighbour.
    - ``max_model_seed_items``: newest history items whose neighbour lists are
      read when a precomputed model serves the request.

    Online, one request reads at most ``max_history_items + max_seed_items *
    max_users_per_item + max_neighbours * max_items_per_neighbour`` index entries
    in ``1 + max_seed_items + max_neighbours`` Query calls (plus extra pages).
    With a model it reads ``max_history_items`` entries and at most
    ``max_model_seed_items`` neighbour lists, in batches of 100.

    The online defaults were chosen by the budgeted offline evaluation on
    MovieLens ml-latest-small (docs/quality.md): 50 seeds and 200 items per
    neighbour served nDCG@10 0.169, 100 and 1,000 served 0.314. With a model,
    500 history items and seeds served 0.3569 against 0.3623 offline; 1,000
    served 0.3621: only the 5 of 610 users with more than 1,000 training
    items are cut. Reading only 1,000 history items left users with longer
    histories to a check of the best candidates by key, which could return
    short lists (0 items at limit=1 for 8 of the 610 users), so the history
    budget is 10,000.
    """

    max_history_items: int = 10_000
    max_seed_items: int = 100
    max_users_per_item: int = 50
    max_neighbours: int = 100
    max_items_per_neighbour: int = 1000
    max_model_seed_items: int = 1000

    def max_items_read(self) -> int:
        return (
            self.max_history_items
            + self.max_seed_items * self.max_users_per_item
            + self.max_neighbours * self.max_items_per_neighbour
        )

    def max_model_items_read(self) -> int:
        return self.max_history_items + self.max_model_seed_items


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


def read_int(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """Read integer variable ``name``: ``default`` when unset, else a value from low to high."""
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


def read_float(environ: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    """Read number variable ``name``: ``default`` when unset, else a value from low to high."""
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


def _read_optional_int(
    environ: Mapping[str, str], name: str, default: int | None, low: int, high: int
) -> int | None:
    """Read an integer that can be switched off: "none" or "off" give None, empty the default."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() in _OFF_WORDS:
        return None
    return read_int(environ, name, low, low, high)


def _read_optional_float(
    environ: Mapping[str, str], name: str, default: float | None, low: float, high: float
) -> float | None:
    """Read a number that can be switched off: "none" or "off" give None, empty the default."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() in _OFF_WORDS:
        return None
    return read_float(environ, name, low, low, high)


def _read_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE_WORDS:
        return True
    if raw in _FALSE_WORDS:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {environ[name]!r}")


def _read_event_weights(
    environ: Mapping[str, str], default: Mapping[str, float]
) -> dict[str, float]:
    """Read ``type=weight`` pairs separated by commas, for example ``view=1,purchase=3``.

    A set variable replaces the whole default mapping; types it does not list
    get DEFAULT_EVENT_WEIGHT.
    """
    raw = environ.get(EVENT_WEIGHTS, "").strip()
    if not raw:
        return dict(default)
    weights: dict[str, float] = {}
    for pair in raw.split(","):
        interaction_type, separator, text = pair.partition("=")
        interaction_type = interaction_type.strip()
        if not separator or not interaction_type:
            raise ConfigurationError(
                f"{EVENT_WEIGHTS} must be type=weight pairs separated by commas, such as"
                f" view=1,purchase=3; got {pair.strip()!r} in {raw!r}"
            )
        if interaction_type in weights:
            raise ConfigurationError(
                f"{EVENT_WEIGHTS} lists {interaction_type!r} twice in {raw!r};"
                " keep one weight per type"
            )
        try:
            weight = float(text)
        except ValueError:
            raise ConfigurationError(
                f"{EVENT_WEIGHTS} weight of {interaction_type!r} must be a number,"
                f" got {text.strip()!r}"
            ) from None
        if not 0.0 <= weight <= MAX_EVENT_WEIGHT:
            raise ConfigurationError(
                f"{EVENT_WEIGHTS} weight of {interaction_type!r} must be between 0 and"
                f" {MAX_EVENT_WEIGHT}, got {text.strip()!r}"
            )
        weights[interaction_type] = weight
    return weights


def load_model_config(environ: Mapping[str, str] | None = None) -> ModelConfig:
    """Build the model parameters from ``environ`` (default ``os.environ``); unset means default."""
    env = os.environ if environ is None else environ
    defaults = ModelConfig()
    overlap_exponent = read_float(
        env, OVERLAP_EXPONENT, defaults.overlap_exponent, 0.0, MAX_OVERLAP_EXPONENT
    )
    neighbours_per_item = _read_optional_int(
        env, NEIGHBOURS_PER_ITEM, defaults.neighbours_per_item, 1, MAX_NEIGHBOURS_PER_ITEM
    )
    if neighbours_per_item is not None and overlap_exponent != 1.0:
        raise ConfigurationError(
            f"{NEIGHBOURS_PER_ITEM} ({neighbours_per_item}) prunes the item-based model, which"
            f" needs {OVERLAP_EXPONENT}=1 (got {overlap_exponent}); set {OVERLAP_EXPONENT}=1"
            f" or unset {NEIGHBOURS_PER_ITEM}"
        )
    half_life_days = _read_optional_float(
        env, HALF_LIFE_DAYS, defaults.half_life_days, MIN_HALF_LIFE_DAYS, MAX_HALF_LIFE_DAYS
    )
    return ModelConfig(
        alpha=read_float(env, SIMILARITY_ALPHA, defaults.alpha, 0.0, MAX_NORMALISATION_EXPONENT),
        beta=read_float(env, SIMILARITY_BETA, defaults.beta, 0.0, MAX_NORMALISATION_EXPONENT),
        user_weight_exponent=read_float(
            env,
            USER_WEIGHT_EXPONENT,
            defaults.user_weight_exponent,
            0.0,
            MAX_NORMALISATION_EXPONENT,
        ),
        overlap_exponent=overlap_exponent,
        neighbours_per_item=neighbours_per_item,
        event_weights=_read_event_weights(env, defaults.event_weights),
        default_event_weight=read_float(
            env, DEFAULT_EVENT_WEIGHT, defaults.default_event_weight, 0.0, MAX_EVENT_WEIGHT
        ),
        rating_as_weight=_read_bool(env, RATING_AS_WEIGHT, defaults.rating_as_weight),
        half_life_days=half_life_days,
    )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``environ`` (default ``os.environ``)."""
    env = os.environ if environ is None else environ

    table_name = env.get(TABLE_NAME, "").strip()
    if not table_name:
        raise ConfigurationError(f"{TABLE_NAME} is not set: set it to the interactions table name")

    defaults = Budgets()
    budgets = Budgets(
        max_history_items=read_int(env, MAX_HISTORY_ITEMS, defaults.max_history_items, 1, 100_000),
        max_seed_items=read_int(env, MAX_SEED_ITEMS, defaults.max_seed_items, 1, 1_000),
        max_users_per_item=read_int(env, MAX_USERS_PER_ITEM, defaults.max_users_per_item, 1, 10_000),
        max_neighbours=read_int(env, MAX_NEIGHBOURS, defaults.max_neighbours, 1, 10_000),
        max_items_per_neighbour=read_int(
            env, MAX_ITEMS_PER_NEIGHBOUR, defaults.max_items_per_neighbour, 1, 10_000
        ),
        max_model_seed_items=read_int(
            env, MAX_MODEL_SEED_ITEMS, defaults.max_model_seed_items, 1, 10_000
        ),
    )
    if budgets.max_seed_items > budgets.max_history_items:
        raise ConfigurationError(
            f"{MAX_SEED_ITEMS} ({budgets.max_seed_items}) must not exceed "
            f"{MAX_HISTORY_ITEMS} ({budgets.max_history_items})"
        )

    model = load_model_config(env)

    return Settings(
        table_name=table_name,
        user_history_index=env.get(USER_HISTORY_INDEX, "").strip() or DEFAULT_USER_HISTORY_INDEX,
        item_users_index=env.get(ITEM_USERS_INDEX, "").strip() or DEFAULT_ITEM_USERS_INDEX,
        budgets=budgets,
        model=model,
        max_concurrent_queries=read_int(env, MAX_CONCURRENT_QUERIES, 16, 1, 256),
        dynamodb_max_attempts=read_int(env, DYNAMODB_MAX_ATTEMPTS, 4, 1, 10),
        dynamodb_connect_timeout_seconds=read_float(
            env, DYNAMODB_CONNECT_TIMEOUT_SECONDS, 1.0, 0.1, 60.0
        ),
        dynamodb_read_timeout_seconds=read_float(env, DYNAMODB_READ_TIMEOUT_SECONDS, 2.0, 0.1, 60.0),
    )
