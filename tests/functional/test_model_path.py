"""Request path with a built item-similarity model, on moto tables built from template.yaml."""

from __future__ import annotations

import importlib
import io
import json
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tools.template_table import create_model_table, create_table

TABLE_NAME = "UserInteractions"
MODEL_TABLE_NAME = "RecommendationModels"

LOG = {
    "u1": ["A", "B"],
    "u2": ["A", "C"],
    "u3": ["A", "C", "D"],
    "u4": ["B", "D"],
    "u5": ["C", "D", "E"],
}


class FakeContext:
    function_name = "RecommendationsFunction"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:RecommendationsFunction"
    aws_request_id = "model-path-request"


def put_log(client: Any, log: dict[str, list[str]], timestamp: int = 1_700_000_000) -> None:
    for user_id, items in log.items():
        for offset, item_id in enumerate(items):
            client.put_item(
                TableName=TABLE_NAME,
                Item={
                    "user_id": {"S": user_id},
                    "item_id": {"S": item_id},
                    "interaction_type": {"S": "view"},
                    "timestamp": {"N": str(timestamp + offset)},
                },
            )


@pytest.fixture
def tables(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)
    monkeypatch.setenv("TABLE_NAME", TABLE_NAME)
    monkeypatch.setenv("MODEL_TABLE_NAME", MODEL_TABLE_NAME)
    with mock_aws():
        client = boto3.client("dynamodb")
        create_table(client, TABLE_NAME)
        create_model_table(client, MODEL_TABLE_NAME)
        put_log(client, LOG)
        yield client


def build(client: Any) -> dict[str, Any]:
    from model_builder import BuilderSettings, build_model

    return build_model(client, BuilderSettings(table_name=TABLE_NAME, model_table_name=MODEL_TABLE_NAME, scan_segments=2))


@pytest.fixture
def load_handler(tables: Any) -> Callable[[], Any]:
    def load() -> Any:
        os.environ["POWERTOOLS_SERVICE_NAME"] = f"model-path-{uuid.uuid4().hex[:8]}"
        for name in ("config", "interaction_store", "model_store", "item_model", "service", "app"):
            sys.modules.pop(name, None)
        return importlib.import_module("app")

    return load


def served_line(module: Any, call: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    logs = io.StringIO()
    module.logger.logger_handler.setStream(logs)
    result = call()
    lines = [json.loads(text) for text in logs.getvalue().splitlines() if text.startswith("{")]
    served = [line for line in lines if line.get("message") in ("Recommendations served", "Similar items served")]
    return result, served[-1]


def api_event(path: str, query: dict[str, list[str]] | None = None) -> dict[str, Any]:
    return {
        "resource": "/",
        "path": path,
        "httpMethod": "GET",
        "headers": {},
        "multiValueHeaders": {},
        "queryStringParameters": {key: values[-1] for key, values in query.items()} if query else None,
        "multiValueQueryStringParameters": query,
        "pathParameters": None,
        "requestContext": {"requestId": "model-path-api", "stage": "prod", "path": path},
        "body": None,
        "isBase64Encoded": False,
    }


def test_model_path_matches_offline_scores(tables: Any, load_handler: Callable[[], Any]) -> None:
    from item_model import InteractionRecord, build_item_model
    from model_builder import BuilderSettings
    from recommender import Interaction, score_items, user_affinities

    build(tables)
    module = load_handler()

    result, line = served_line(module, lambda: module.lambda_handler({"user_id": "u1", "limit": 5}, FakeContext()))

    # The same model computed in memory from the same log.
    config = BuilderSettings(table_name=TABLE_NAME, model_table_name=MODEL_TABLE_NAME).model
    records = [
        InteractionRecord(user, item, "view", 1_700_000_000 + offset, None)
        for user, items in LOG.items()
        for offset, item in enumerate(items)
    ]
    model = build_item_model(records, config)
    rows = {item: dict(model.neighbours(item)) for item in ("A", "B")}
    history = [Interaction(item, 1_700_000_000 + offset, "view") for offset, item in enumerate(LOG["u1"])]
    expected = score_items(user_affinities(history, module._service._settings.model), rows, 5, exclude={"A", "B"})

    assert line["source"] == "model"
    assert [row["item_id"] for row in result["recommendations"]] == [rec.item_id for rec in expected]
    for row, rec in zip(result["recommendations"], expected):
        assert row["score"] == pytest.approx(rec.score, abs=1e-6)


def test_model_path_rounds_and_calls(tables: Any, load_handler: Callable[[], Any]) -> None:
    build(tables)
    module = load_handler()
    operations: list[str] = []
    module._service._store._client.meta.events.register(
        "before-call.dynamodb.*", lambda model, **_: operations.append(model.name)
    )

    _, line = served_line(module, lambda: module.lambda_handler({"user_id": "u1"}, FakeContext()))

    assert line["source"] == "model"
    assert line["rounds"] <= 3
    assert set(operations) <= {"GetItem", "Query", "BatchGetItem"}
    assert operations.count("Query") == 1
    assert operations.count("BatchGetItem") == 1


def test_pointer_read_overlaps_history_query(
    tables: Any, load_handler: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_CACHE_SECONDS", "0")  # every request reads the pointer
    build(tables)
    module = load_handler()
    query_started = threading.Event()
    overlapped: list[bool] = []

    def before_call(model: Any, **_: Any) -> None:
        if model.name == "Query":
            query_started.set()
        elif model.name == "GetItem":
            # Read one after the other, the GetItem would wait here for a Query that
            # has not been sent, and time out.
            overlapped.append(query_started.wait(timeout=5))

    module._service._store._client.meta.events.register("before-call.dynamodb.*", before_call)
    _, line = served_line(module, lambda: module.lambda_handler({"user_id": "u1"}, FakeContext()))

    assert overlapped == [True]
    assert line["source"] == "model"
    assert line["rounds"] == 2


def test_long_history_excludes_old_items_before_ranking(tables: Any, load_handler: Callable[[], Any]) -> None:
    # "heavy" has 1,200 items. Its newest item co-occurs with its ten oldest items and with
    # one item it does not have. The ten old items win the ties by id.
    heavy = [f"I{number:04d}" for number in range(1200)]
    others = {f"v{number}": ["I1199", *heavy[:10], "NEW"] for number in range(20)}
    requests = [
        {"PutRequest": {"Item": {
            "user_id": {"S": user_id}, "item_id": {"S": item_id},
            "interaction_type": {"S": "view"}, "timestamp": {"N": str(1_700_000_000 + offset)},
        }}}
        for user_id, items in {"heavy": heavy, **others}.items()
        for offset, item_id in enumerate(items)
    ]  # fmt: skip
    for start in range(0, len(requests), 25):
        tables.batch_write_item(RequestItems={TABLE_NAME: requests[start : start + 25]})
    build(tables)
    module = load_handler()

    result, line = served_line(module, lambda: module.lambda_handler({"user_id": "heavy", "limit": 1}, FakeContext()))

    assert [row["item_id"] for row in result["recommendations"]] == ["NEW"]
    assert line["history_items"] == 1200
    assert line["dropped_seen"] == 0
    assert line["rounds"] == 2


def test_cold_user_gets_popular_list(tables: Any, load_handler: Callable[[], Any]) -> None:
    build(tables)
    module = load_handler()

    result = module.lambda_handler({"user_id": "newcomer", "limit": 3}, FakeContext())
    status_response = module.lambda_handler(api_event("/recommendations/newcomer"), FakeContext())
    body = json.loads(status_response["body"])

    # A, C and D have three users each, B two, E one: ties go to the smaller id.
    assert result["source"] == "popular"
    assert [row["item_id"] for row in result["recommendations"]] == ["A", "C", "D"]
    assert body["source"] == "popular"
    assert status_response["statusCode"] == 200


def test_cold_user_without_model_gets_empty_list(tables: Any, load_handler: Callable[[], Any]) -> None:
    module = load_handler()

    result = module.lambda_handler({"user_id": "newcomer"}, FakeContext())

    assert result == {"user_id": "newcomer", "recommendations": []}


def test_missing_model_falls_back_online(tables: Any, load_handler: Callable[[], Any]) -> None:
    module = load_handler()

    result, line = served_line(module, lambda: module.lambda_handler({"user_id": "u1"}, FakeContext()))

    assert line["source"] == "online"
    assert {row["item_id"] for row in result["recommendations"]} == {"C", "D"}


def test_items_new_since_build_fall_back_online(tables: Any, load_handler: Callable[[], Any]) -> None:
    build(tables)
    put_log(tables, {"late1": ["F", "G"], "late2": ["F", "G", "H"]}, timestamp=1_800_000_000)
    module = load_handler()

    result, line = served_line(module, lambda: module.lambda_handler({"user_id": "late1"}, FakeContext()))

    assert line["source"] == "online"
    assert line["uncovered_seeds"] == 2
    assert [row["item_id"] for row in result["recommendations"]] == ["H"]


def test_new_seed_beside_covered_seeds_is_ranked_online(
    tables: Any, load_handler: Callable[[], Any], capsys: pytest.CaptureFixture[str]
) -> None:
    build(tables)
    # F and G are new since the build; "mixed" has one item in the model and one new item.
    put_log(tables, {"late": ["F", "G"], "mixed": ["A", "F"]}, timestamp=1_800_000_000)
    module = load_handler()

    result, line = served_line(
        module, lambda: module.lambda_handler({"user_id": "mixed", "limit": 10, "explain": True}, FakeContext())
    )

    recommended = {row["item_id"]: row for row in result["recommendations"]}
    assert line["source"] == "model"
    assert line["uncovered_seeds"] == 1
    assert line["fallback_seeds"] == 1
    # G comes only from the online ranking of F; B, C and D only from A's neighbour list.
    assert "G" in recommended
    assert recommended["G"]["because"] == "F"
    assert {"B", "C", "D"} <= set(recommended)
    assert not {"A", "F"} & set(recommended)
    # History, neighbour lists, then the item index and the neighbours' histories.
    assert line["rounds"] <= 4
    emf = [json.loads(text) for text in capsys.readouterr().out.splitlines() if '"_aws"' in text]
    assert emf
    assert emf[-1]["SeedsRankedOnline"] == [1.0]


def test_similar_items_route(tables: Any, load_handler: Callable[[], Any]) -> None:
    build(tables)
    module = load_handler()

    response = module.lambda_handler(api_event("/items/A/similar", {"limit": ["2"]}), FakeContext())
    unknown = module.lambda_handler(api_event("/items/nothing/similar"), FakeContext())
    bad = module.lambda_handler(api_event("/items/A/similar", {"limit": ["0"]}), FakeContext())
    body = json.loads(response["body"])

    assert response["statusCode"] == 200
    assert body["item_id"] == "A"
    assert len(body["similar"]) == 2
    assert "A" not in {row["item_id"] for row in body["similar"]}
    assert [row["score"] for row in body["similar"]] == sorted((row["score"] for row in body["similar"]), reverse=True)
    assert unknown["statusCode"] == 200
    assert json.loads(unknown["body"])["similar"] == []
    assert bad["statusCode"] == 400
    assert json.loads(bad["body"])["field"] == "limit"


def test_similar_items_before_build_is_503(tables: Any, load_handler: Callable[[], Any]) -> None:
    module = load_handler()

    response = module.lambda_handler(api_event("/items/A/similar"), FakeContext())
    headers = {key: values[-1] for key, values in response["multiValueHeaders"].items()}

    assert response["statusCode"] == 503
    assert headers["Retry-After"] == "60"
    assert "not been built" in json.loads(response["body"])["message"]
