"""src/model_builder.py on moto: settings, one build from Scan to CURRENT, and the Lambda handler."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

import model_builder
from config import ConfigurationError
from interaction_store import ReadStats, StoreError
from item_model import InteractionRecord, build_item_model, similarity_config
from model_builder import BuilderSettings, build_model, load_builder_settings
from model_store import ModelStore
from recommender import ModelConfig
from tools.template_table import create_model_table, create_table

TABLE = "BuilderInteractions"
MODEL_TABLE = "BuilderModels"
REQUIRED_ENV = {"TABLE_NAME": TABLE, "MODEL_TABLE_NAME": MODEL_TABLE}


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, TABLE)
        create_model_table(client, MODEL_TABLE)
        yield client


def make_log(seed: int = 4) -> list[InteractionRecord]:
    rng = random.Random(seed)
    rows: dict[tuple[str, str], InteractionRecord] = {}
    for row in range(500):
        user, item = f"u{rng.randrange(40)}", f"i{min(int(rng.paretovariate(1.0)), 80):02d}"
        rows[(user, item)] = InteractionRecord(user, item, "view", 1_700_000_000 + row)
    return list(rows.values())  # one row per (user, item), as the table stores them


def put_log(client: Any, log: list[InteractionRecord]) -> None:
    for start in range(0, len(log), 25):
        requests = [
            {
                "PutRequest": {
                    "Item": {
                        "user_id": {"S": record.user_id},
                        "item_id": {"S": record.item_id},
                        "interaction_type": {"S": record.interaction_type},
                        "timestamp": {"N": str(record.timestamp)},
                    }
                }
            }
            for record in log[start : start + 25]
        ]
        client.batch_write_item(RequestItems={TABLE: requests})


def settings(neighbours: int = 6, **overrides: Any) -> BuilderSettings:
    values: dict[str, Any] = {
        "table_name": TABLE,
        "model_table_name": MODEL_TABLE,
        "neighbours_per_item": neighbours,
        "model": similarity_config(neighbours),
        "scan_segments": 3,
    }
    values.update(overrides)
    return BuilderSettings(**values)


def test_build_writes_and_publishes_model(dynamodb: Any) -> None:
    log = make_log()
    put_log(dynamodb, log)
    expected = build_item_model(log, similarity_config(6))

    summary = build_model(dynamodb, settings())

    assert summary["published"] is True
    assert summary["interactions"] == len(log)
    assert summary["users"] == expected.users
    assert summary["items"] == len(expected.item_ids)
    assert summary["items_written"] == len(expected.item_ids) + 2
    with ThreadPoolExecutor(max_workers=2) as executor:
        store = ModelStore(dynamodb, MODEL_TABLE, executor, cache_seconds=0)
        stats = ReadStats()
        pointer = store.current_version(stats)
        assert pointer is not None
        assert pointer.version == summary["version"]
        lists = store.neighbour_lists(pointer.version, expected.item_ids, stats)
        meta = store.version_meta(pointer.version, stats)
        popular = store.popular_items(pointer.version, stats)
    for item_id in expected.item_ids:
        assert lists[item_id] == expected.neighbours(item_id), item_id
    assert popular == expected.most_popular()
    assert meta is not None
    assert json.loads(str(meta["config"]))["neighbours_per_item"] == 6
    assert meta["interactions"] == len(log)


def test_second_build_replaces_current(dynamodb: Any) -> None:
    put_log(dynamodb, make_log())
    first = build_model(dynamodb, settings(), now=datetime(2025, 1, 1, tzinfo=UTC))

    second = build_model(dynamodb, settings(), now=datetime(2025, 1, 2, tzinfo=UTC))

    current = dynamodb.get_item(TableName=MODEL_TABLE, Key={"pk": {"S": "CURRENT"}})["Item"]
    assert second["version"] > first["version"]
    assert current["version"]["S"] == second["version"]


def test_empty_table_publishes_nothing(dynamodb: Any) -> None:
    summary = build_model(dynamodb, settings())

    assert summary["published"] is False
    assert summary["interactions"] == 0
    assert "Item" not in dynamodb.get_item(TableName=MODEL_TABLE, Key={"pk": {"S": "CURRENT"}})


def test_failed_write_keeps_previous_model(dynamodb: Any) -> None:
    put_log(dynamodb, make_log())
    first = build_model(dynamodb, settings())

    class FailingWrites:
        def __init__(self, client: Any) -> None:
            self._client = client

        def __getattr__(self, name: str) -> Any:
            return getattr(self._client, name)

        def batch_write_item(self, **kwargs: Any) -> dict[str, Any]:
            raise ClientError(
                {"Error": {"Code": "ValidationException", "Message": "simulated"}}, "BatchWriteItem"
            )

    with pytest.raises(StoreError, match="ValidationException"):
        build_model(FailingWrites(dynamodb), settings())

    current = dynamodb.get_item(TableName=MODEL_TABLE, Key={"pk": {"S": "CURRENT"}})["Item"]
    assert current["version"]["S"] == first["version"]


@dataclass
class FakeContext:
    function_name: str = "ModelBuilderFunction"
    memory_limit_in_mb: int = 3008
    invoked_function_arn: str = (
        "arn:aws:lambda:us-east-1:123456789012:function:ModelBuilderFunction"
    )
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"


def test_lambda_handler_builds(dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    put_log(dynamodb, make_log())
    for name, value in {**REQUIRED_ENV, "MODEL_NEIGHBOURS_PER_ITEM": "4"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(model_builder, "_client", None)

    summary = model_builder.lambda_handler({"source": "aws.events"}, FakeContext())

    assert summary["published"] is True
    assert summary["interactions"] == len(make_log())


def test_lambda_handler_reports_bad_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABLE_NAME", TABLE)
    monkeypatch.delenv("MODEL_TABLE_NAME", raising=False)

    with pytest.raises(ConfigurationError, match="MODEL_TABLE_NAME"):
        model_builder.lambda_handler({}, FakeContext())


def test_settings_defaults() -> None:
    loaded = load_builder_settings(REQUIRED_ENV)

    assert loaded.table_name == TABLE
    assert loaded.model_table_name == MODEL_TABLE
    assert loaded.read_capacity_per_second == 1000.0
    assert loaded.neighbours_per_item == 100
    assert loaded.max_items_per_user is None
    assert loaded.retention_hours == 72.0
    assert loaded.model.neighbours_per_item == 100
    assert loaded.model.overlap_exponent == 1.0


def test_settings_from_env() -> None:
    loaded = load_builder_settings(
        {
            **REQUIRED_ENV,
            "BUILDER_READ_CAPACITY_PER_SECOND": "250",
            "BUILDER_SCAN_SEGMENTS": "8",
            "MODEL_NEIGHBOURS_PER_ITEM": "30",
            "MODEL_MAX_ITEMS_PER_USER": "500",
            "MODEL_RETENTION_HOURS": "24",
            "SIMILARITY_ALPHA": "0.3",
            "SIMILARITY_BETA": "0.7",
            "USER_WEIGHT_EXPONENT": "0",
        }
    )

    assert loaded.read_capacity_per_second == 250.0
    assert loaded.scan_segments == 8
    assert loaded.neighbours_per_item == 30
    assert loaded.max_items_per_user == 500
    assert loaded.retention_hours == 24.0
    assert loaded.model == similarity_config(
        30, ModelConfig(alpha=0.3, beta=0.7, user_weight_exponent=0.0)
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TABLE_NAME", ""),
        ("MODEL_TABLE_NAME", " "),
        ("BUILDER_READ_CAPACITY_PER_SECOND", "lots"),
        ("BUILDER_READ_CAPACITY_PER_SECOND", "0"),
        ("BUILDER_SCAN_SEGMENTS", "65"),
        ("MODEL_NEIGHBOURS_PER_ITEM", "0"),
        ("MODEL_NEIGHBOURS_PER_ITEM", "1001"),
        ("MODEL_MAX_ITEMS_PER_USER", "1.5"),
        ("MODEL_RETENTION_HOURS", "0"),
        ("SIMILARITY_ALPHA", "3"),
    ],
)
def test_invalid_setting_named(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        load_builder_settings({**REQUIRED_ENV, variable: value})
