"""Handler tests against a moto table built from template.yaml.

Both callers are covered: API Gateway REST proxy events and direct invocation.
"""

from __future__ import annotations

import copy
import importlib
import io
import json
import math
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from moto import mock_aws

from tools.template_table import create_table

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENTS_DIR = REPO_ROOT / "events"
TABLE_NAME = "UserInteractions"

MODEL_ENV = {
    "OVERLAP_EXPONENT": "1",
    "SIMILARITY_ALPHA": "0.5",
    "SIMILARITY_BETA": "0.5",
    "USER_WEIGHT_EXPONENT": "0.5",
}

# user -> items. With the model of MODEL_ENV (alpha = beta = user weight exponent = 0.5)
# the scores for u1 can be worked out by hand; see test_scores_match_formula.
SMALL_LOG = {
    "u1": ["A", "B"],
    "u2": ["A", "C"],
    "u3": ["A", "C", "D"],
    "u4": ["B", "D"],
}


class FakeContext:
    function_name = "RecommendationsFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:RecommendationsFunction"
    aws_request_id = "11111111-2222-3333-4444-555555555555"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


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
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)
    monkeypatch.setenv("TABLE_NAME", TABLE_NAME)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "recommendations-test")
    # The item-based form with cosine-like exponents, whose scores the tests
    # below work out by hand; the tuned defaults are tested in the unit tests.
    for name, value in MODEL_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def dynamodb(aws_env: None) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb")
        create_table(client, TABLE_NAME)
        yield client


@pytest.fixture
def load_handler(dynamodb: Any) -> Callable[[], Any]:
    """Import ``app`` afresh, so that it reads the current environment at cold start."""

    def load() -> Any:
        # Powertools keeps the first handler of a service's logger; a new
        # service name gives each import its own, for capture_logs.
        os.environ["POWERTOOLS_SERVICE_NAME"] = f"recommendations-test-{uuid.uuid4().hex[:8]}"
        for name in ("config", "interaction_store", "service", "app"):
            sys.modules.pop(name, None)
        return importlib.import_module("app")

    return load


@pytest.fixture
def handler(load_handler: Callable[[], Any], dynamodb: Any) -> Any:
    put_log(dynamodb, SMALL_LOG)
    return load_handler()


def capture_logs(module: Any) -> io.StringIO:
    """Send the function's JSON log lines to a buffer that the test can read."""
    buffer = io.StringIO()
    module.logger.logger_handler.setStream(buffer)
    return buffer


def api_event(path: str, query: dict[str, list[str]] | None = None) -> dict[str, Any]:
    event = json.loads((EVENTS_DIR / "api-get-recommendations.json").read_text())
    event["path"] = path
    event["requestContext"]["path"] = path
    event["multiValueQueryStringParameters"] = query
    event["queryStringParameters"] = {key: values[-1] for key, values in query.items()} if query else None
    return event


def call_api(module: Any, path: str, query: dict[str, list[str]] | None = None) -> tuple[int, dict[str, Any], dict[str, Any]]:
    response = module.lambda_handler(api_event(path, query), FakeContext())
    headers = {key: values[-1] for key, values in (response.get("multiValueHeaders") or {}).items()}
    headers.update(response.get("headers") or {})
    return response["statusCode"], json.loads(response["body"]), headers


def test_scores_match_formula(handler: Any) -> None:
    result = handler.lambda_handler({"user_id": "u1"}, FakeContext())

    # Users linked to u1 through A or B: u2, u3, u4, plus u1 itself.
    # pop: A=3, B=2, C=2, D=2; user weights 1/sqrt(|H_u|).
    w2, w3, w4 = 1 / math.sqrt(2), 1 / math.sqrt(3), 1 / math.sqrt(2)
    sim_a_c = (w2 + w3) / (math.sqrt(3) * math.sqrt(2))
    sim_a_d = w3 / (math.sqrt(3) * math.sqrt(2))
    sim_b_d = w4 / (math.sqrt(2) * math.sqrt(2))
    expected = [("D", sim_a_d + sim_b_d), ("C", sim_a_c)]

    items = [(row["item_id"], row["score"]) for row in result["recommendations"]]
    assert [item for item, _ in items] == [item for item, _ in expected]
    for (_, score), (_, expected_score) in zip(items, expected):
        assert score == pytest.approx(expected_score, abs=1e-6)


def test_direct_and_api_agree(handler: Any) -> None:
    direct = handler.lambda_handler({"user_id": "u2", "limit": 2}, FakeContext())
    status, body, headers = call_api(handler, "/recommendations/u2", {"limit": ["2"]})

    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert body == direct
    assert body["user_id"] == "u2"
    assert len(body["recommendations"]) == 2


def test_never_returns_seen_items(handler: Any) -> None:
    for user_id, items in SMALL_LOG.items():
        result = handler.lambda_handler({"user_id": user_id, "limit": 100}, FakeContext())
        returned = {row["item_id"] for row in result["recommendations"]}
        assert returned, f"no recommendations for {user_id}"
        assert not returned & set(items)


def test_scores_are_plain_numbers_sorted(handler: Any) -> None:
    status, body, _ = call_api(handler, "/recommendations/u3")

    scores = [row["score"] for row in body["recommendations"]]
    assert status == 200
    assert all(type(score) is float for score in scores)
    assert scores == sorted(scores, reverse=True)


def test_limit_defaults_to_ten(load_handler: Callable[[], Any], dynamodb: Any) -> None:
    log = {"target": ["seed"], **{f"other{n}": ["seed", *(f"item{n}-{k}" for k in range(3))] for n in range(8)}}
    put_log(dynamodb, log)
    module = load_handler()

    result = module.lambda_handler({"user_id": "target"}, FakeContext())
    limited = module.lambda_handler({"user_id": "target", "limit": 3}, FakeContext())

    assert len(result["recommendations"]) == 10
    assert len(limited["recommendations"]) == 3
    assert limited["recommendations"] == result["recommendations"][:3]


def test_default_model_excludes_seen(load_handler: Callable[[], Any], dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    put_log(dynamodb, SMALL_LOG)
    for name in MODEL_ENV:
        monkeypatch.delenv(name)
    module = load_handler()

    result = module.lambda_handler({"user_id": "u1", "explain": True}, FakeContext())
    returned = {row["item_id"] for row in result["recommendations"]}

    assert returned == {"C", "D"}
    assert all(row["because"] in SMALL_LOG["u1"] for row in result["recommendations"])


def test_unknown_user_gets_empty_list(handler: Any) -> None:
    status, body, _ = call_api(handler, "/recommendations/nobody")

    assert status == 200
    assert body == {"user_id": "nobody", "recommendations": []}


@pytest.mark.parametrize(
    ("user_id", "encoded"),
    [
        ("alice@example.com", "alice%40example.com"),
        ("first last", "first%20last"),
        ("josé", "jos%C3%A9"),
        ("用户", "%E7%94%A8%E6%88%B7"),
        ("100%25", "100%2525"),
        ("a/b", "a%2Fb"),
    ],
)
def test_path_user_id_decoded_once(load_handler: Callable[[], Any], dynamodb: Any, user_id: str, encoded: str) -> None:
    put_log(dynamodb, {user_id: ["A"], "other": ["A", "B"]})
    module = load_handler()

    status, body, _ = call_api(module, f"/recommendations/{encoded}")

    assert status == 200
    assert body["user_id"] == user_id
    assert [row["item_id"] for row in body["recommendations"]] == ["B"]


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ({"limit": ["0"]}, "from 1 to 100"),
        ({"limit": ["101"]}, "from 1 to 100"),
        ({"limit": ["abc"]}, "integer"),
        ({"limit": ["1.5"]}, "integer"),
        ({"limit": ["-1"]}, "integer"),
        ({"limit": [""]}, "integer"),
        ({"limit": ["5", "6"]}, "at most once"),
    ],
)
def test_bad_limit_is_400(handler: Any, query: dict[str, list[str]], fragment: str) -> None:
    status, body, _ = call_api(handler, "/recommendations/u1", query)

    assert status == 400
    assert body["field"] == "limit"
    assert fragment in body["message"]


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/recommendations/" + "x" * 2049, "2049 bytes"),
        ("/recommendations/" + "%C3%A9" * 1025, "2050 bytes"),
        ("/recommendations/%FF", "percent-encoded UTF-8"),
        ("/recommendations", "required"),
    ],
)
def test_bad_user_id_is_400(handler: Any, path: str, fragment: str) -> None:
    status, body, _ = call_api(handler, path)

    assert status == 400
    assert body["field"] == "user_id"
    assert fragment in body["message"]


def test_user_id_at_key_size_limit_accepted(handler: Any) -> None:
    status, body, _ = call_api(handler, "/recommendations/" + "x" * 2048)

    assert status == 200
    assert body["recommendations"] == []


def test_unknown_route_is_404(handler: Any) -> None:
    event = api_event("/items/A")

    response = handler.lambda_handler(event, FakeContext())

    assert response["statusCode"] == 404


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": 42}, "user_id"),
        ({"user_id": None}, "user_id"),
        ({"user_id": "\ud800"}, "user_id"),
        ({"user_id": "u1", "limit": 0}, "limit"),
        ({"user_id": "u1", "limit": True}, "limit"),
        ({"user_id": "u1", "limit": 2.5}, "limit"),
        ({"user_id": "u1", "limit": "ten"}, "limit"),
        ({"user_id": "u1", "limit": [5]}, "limit"),
        ({"user_id": "u1", "count": 5}, "count"),
        (["u1"], "event"),
        ("u1", "event"),
        (None, "event"),
    ],
)
def test_malformed_direct_event_is_400(handler: Any, event: Any, field: str) -> None:
    result = handler.lambda_handler(event, FakeContext())

    assert result["statusCode"] == 400
    assert result["field"] == field
    assert result["message"]


def test_direct_limit_accepts_integral_float_and_digits(handler: Any) -> None:
    as_float = handler.lambda_handler({"user_id": "u2", "limit": 1.0}, FakeContext())
    as_text = handler.lambda_handler({"user_id": "u2", "limit": "1"}, FakeContext())

    assert len(as_float["recommendations"]) == 1
    assert as_text == as_float


def make_client_error(code: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"simulated {code} on table {TABLE_NAME}"},
            "ResponseMetadata": {"RequestId": "FAKE-DYNAMODB-REQUEST-ID", "HTTPStatusCode": 400},
        },
        "Query",
    )


def fail_queries(module: Any, error: Exception, after: int = 0) -> None:
    """Make the function's DynamoDB client raise ``error`` from its Query call number ``after + 1`` on."""
    client = module._service._store._client
    real_query = client.query
    calls = {"count": 0}

    def query(**kwargs: Any) -> Any:
        calls["count"] += 1
        if calls["count"] > after:
            raise error
        return real_query(**kwargs)

    client.query = query


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (make_client_error("ThrottlingException"), 503),
        (make_client_error("ProvisionedThroughputExceededException"), 503),
        (make_client_error("InternalServerError"), 503),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), 503),
        (make_client_error("ResourceNotFoundException"), 500),
        (make_client_error("AccessDeniedException"), 500),
        (make_client_error("ValidationException"), 500),
    ],
)
@pytest.mark.parametrize("after", [0, 1, 2])
def test_dynamodb_faults_give_json_5xx(
    handler: Any, error: Exception, status: int, after: int
) -> None:
    # after = 0, 1, 2 fails the first, second or third round of reads, so a
    # failure in the concurrent rounds is covered as well as the first Query.
    fail_queries(handler, error, after=after)
    logs = capture_logs(handler)

    code, body, headers = call_api(handler, "/recommendations/u1")
    records = [json.loads(line) for line in logs.getvalue().splitlines()]

    assert code == status
    assert "recommendations" not in body
    assert TABLE_NAME not in json.dumps(body)
    assert "Traceback" not in json.dumps(body)
    assert body["request_id"] == "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    assert any(record["level"] in ("WARNING", "ERROR") for record in records)
    assert all(record["correlation_id"] == "c6af9ac6-7b61-11e6-9a41-93e8deadbeef" for record in records)
    assert any(record.get("error_code") for record in records)
    if status == 503:
        assert headers["Retry-After"] == "1"


def test_dynamodb_fault_on_direct_invocation(handler: Any) -> None:
    fail_queries(handler, make_client_error("ThrottlingException"))

    result = handler.lambda_handler({"user_id": "u1"}, FakeContext())

    assert result["statusCode"] == 503
    assert "recommendations" not in result
    assert result["request_id"] == FakeContext.aws_request_id


def test_missing_table_name_gives_500(load_handler: Callable[[], Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TABLE_NAME")
    module = load_handler()

    status, body, _ = call_api(module, "/recommendations/u1")

    assert status == 500
    assert "TABLE_NAME" not in body["message"]


def test_request_path_never_scans(handler: Any) -> None:
    operations: list[str] = []
    client = handler._service._store._client
    client.meta.events.register(
        "before-call.dynamodb.*", lambda model, **_: operations.append(model.name)
    )

    for user_id in [*SMALL_LOG, "nobody"]:
        handler.lambda_handler({"user_id": user_id}, FakeContext())
        call_api(handler, f"/recommendations/{user_id}", {"limit": ["3"]})

    assert operations
    assert "Scan" not in operations
    assert set(operations) == {"Query"}


def test_budgets_bound_reads(load_handler: Callable[[], Any], dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # A target with 6 items, each shared by 12 other users with 5 items each.
    log: dict[str, list[str]] = {"target": [f"seed{n}" for n in range(6)]}
    for n in range(12):
        log[f"other{n}"] = [f"seed{n % 6}", f"seed{(n + 1) % 6}", *(f"x{n}-{k}" for k in range(3))]
    put_log(dynamodb, log)
    budgets = {
        "MAX_HISTORY_ITEMS": "5",
        "MAX_SEED_ITEMS": "3",
        "MAX_USERS_PER_ITEM": "4",
        "MAX_NEIGHBOURS": "2",
        "MAX_ITEMS_PER_NEIGHBOUR": "3",
    }
    for name, value in budgets.items():
        monkeypatch.setenv(name, value)
    module = load_handler()
    logs = capture_logs(module)

    result = module.lambda_handler({"user_id": "target"}, FakeContext())
    line = next(json.loads(text) for text in logs.getvalue().splitlines() if "Recommendations served" in text)

    assert result["recommendations"]
    assert line["history_items"] == 5
    assert line["seed_items"] == 3
    assert line["neighbours"] == 2
    # The history filled its budget of 5, so a fourth round checks candidates by key.
    assert line["rounds"] == 4
    assert line["query_calls"] == 1 + 3 + 2
    assert line["batch_get_calls"] == 1
    # Index entries within the budgets, plus at most 10 x 10 candidates found by key.
    assert line["items_read"] <= 5 + 3 * 4 + 2 * 3 + 10 * 10


@pytest.mark.parametrize("event_file", sorted(EVENTS_DIR.glob("*.json")), ids=lambda path: path.name)
def test_event_files(load_handler: Callable[[], Any], dynamodb: Any, event_file: Path) -> None:
    put_log(dynamodb, {"user123": ["A", "B"], "user456": ["A", "C"], "user789": ["B", "D"]})
    module = load_handler()
    event = json.loads(event_file.read_text())

    result = module.lambda_handler(copy.deepcopy(event), FakeContext())

    body = json.loads(result["body"]) if "httpMethod" in event else result
    if "httpMethod" in event:
        assert result["statusCode"] == 200
    assert body["user_id"] == "user123"
    assert {row["item_id"] for row in body["recommendations"]} == {"C", "D"}


def test_exclude_removes_items(handler: Any) -> None:
    status, body, _ = call_api(handler, "/recommendations/u1", {"exclude": ["D"]})
    direct = handler.lambda_handler({"user_id": "u1", "exclude": ["D", "C"]}, FakeContext())

    assert status == 200
    assert [row["item_id"] for row in body["recommendations"]] == ["C"]
    assert direct["recommendations"] == []


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ({"exclude": [""]}, "non-empty"),
        ({"exclude": ["x" * 1025]}, "1025 bytes"),
        ({"exclude": [f"item{n}" for n in range(101)]}, "maximum is 100"),
    ],
)
def test_bad_exclude_is_400(handler: Any, query: dict[str, list[str]], fragment: str) -> None:
    status, body, _ = call_api(handler, "/recommendations/u1", query)

    assert status == 400
    assert body["field"] == "exclude"
    assert fragment in body["message"]


def test_direct_exclude_must_be_list(handler: Any) -> None:
    result = handler.lambda_handler({"user_id": "u1", "exclude": "D"}, FakeContext())

    assert result["statusCode"] == 400
    assert result["field"] == "exclude"


def test_explain_names_strongest_seed(handler: Any) -> None:
    # For D: seed A contributes w3 / sqrt(pop A) = 0.333, seed B w4 / sqrt(pop B) = 0.5.
    status, body, _ = call_api(handler, "/recommendations/u1", {"explain": ["true"]})
    plain_status, plain, _ = call_api(handler, "/recommendations/u1", {"explain": ["false"]})

    assert status == 200
    assert plain_status == 200
    assert {row["item_id"]: row["because"] for row in body["recommendations"]} == {"D": "B", "C": "A"}
    assert all("because" not in row for row in plain["recommendations"])
    assert [row["score"] for row in body["recommendations"]] == [row["score"] for row in plain["recommendations"]]


@pytest.mark.parametrize("value", ["yes", "1", ""])
def test_bad_explain_is_400(handler: Any, value: str) -> None:
    status, body, _ = call_api(handler, "/recommendations/u1", {"explain": [value]})

    assert status == 400
    assert body["field"] == "explain"


def test_metrics_emitted_as_emf(handler: Any, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()

    handler.lambda_handler({"user_id": "u1"}, FakeContext())
    call_api(handler, "/recommendations/u1", {"limit": ["0"]})
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]

    names = {
        metric["Name"]
        for document in documents
        for directive in document["_aws"]["CloudWatchMetrics"]
        for metric in directive["Metrics"]
    }
    assert {"RecommendationLatency", "CandidatesScored", "DynamoDBCalls", "ItemsRead"} <= names
    assert "ClientErrors" in names
    assert all(document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Recommendations" for document in documents)


def test_cors_headers_when_origin_set(load_handler: Callable[[], Any], dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    put_log(dynamodb, SMALL_LOG)
    monkeypatch.setenv("CORS_ALLOW_ORIGIN", "https://app.example.com")
    module = load_handler()

    def call_from(origin: str) -> dict[str, Any]:
        event = api_event("/recommendations/u1")
        event["headers"]["Origin"] = origin
        event["multiValueHeaders"]["Origin"] = [origin]
        response = module.lambda_handler(event, FakeContext())
        return {key: values[-1] for key, values in response["multiValueHeaders"].items()}

    allowed = call_from("https://app.example.com")
    other = call_from("https://evil.example.net")

    assert allowed["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Access-Control-Allow-Origin" not in other


def test_no_cors_headers_by_default(handler: Any) -> None:
    event = api_event("/recommendations/u1")
    event["headers"]["Origin"] = "https://app.example.com"
    event["multiValueHeaders"]["Origin"] = ["https://app.example.com"]

    response = handler.lambda_handler(event, FakeContext())
    headers = {key: values[-1] for key, values in response["multiValueHeaders"].items()}

    assert "Access-Control-Allow-Origin" not in headers


def long_history_log() -> dict[str, list[str]]:
    # "target" has 6 items; with a history budget of 3 its 3 oldest (old0-old2)
    # are not read. Every neighbour shares the newest seeds and holds old0-old2,
    # so without the key check those would be the top candidates.
    return {
        "target": ["old0", "old1", "old2", "new0", "new1", "new2"],
        **{f"n{k}": ["new0", "new1", "old0", "old1", "old2", f"fresh{k}"] for k in range(5)},
    }


def load_long_history_handler(load_handler: Callable[[], Any], dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    put_log(dynamodb, long_history_log())
    monkeypatch.setenv("MAX_HISTORY_ITEMS", "3")
    monkeypatch.setenv("MAX_SEED_ITEMS", "2")
    return load_handler()


def test_old_history_items_never_returned(load_handler: Callable[[], Any], dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_long_history_handler(load_handler, dynamodb, monkeypatch)
    logs = capture_logs(module)

    result = module.lambda_handler({"user_id": "target", "limit": 5}, FakeContext())
    line = next(json.loads(text) for text in logs.getvalue().splitlines() if "Recommendations served" in text)
    returned = [row["item_id"] for row in result["recommendations"]]

    assert returned
    assert not set(returned) & set(long_history_log()["target"])
    assert line["history_items"] == 3
    assert line["dropped_seen"] == 3
    assert line["batch_get_calls"] == 1
    assert line["rounds"] == 4


def test_short_history_skips_key_check(handler: Any) -> None:
    logs = capture_logs(handler)

    handler.lambda_handler({"user_id": "u1"}, FakeContext())
    line = next(json.loads(text) for text in logs.getvalue().splitlines() if "Recommendations served" in text)

    assert line["batch_get_calls"] == 0
    assert line["rounds"] == 3


def test_unprocessed_keys_retried(load_handler: Callable[[], Any], dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_long_history_handler(load_handler, dynamodb, monkeypatch)
    client = module._service._store._client
    real_batch_get = client.batch_get_item
    calls = {"count": 0}

    def batch_get_item(**kwargs: Any) -> Any:
        # The first call processes nothing and hands every key back.
        calls["count"] += 1
        if calls["count"] == 1:
            return {"Responses": {TABLE_NAME: []}, "UnprocessedKeys": kwargs["RequestItems"]}
        return real_batch_get(**kwargs)

    client.batch_get_item = batch_get_item
    result = module.lambda_handler({"user_id": "target", "limit": 5}, FakeContext())

    assert calls["count"] == 2
    assert not {row["item_id"] for row in result["recommendations"]} & set(long_history_log()["target"])


def test_unprocessed_keys_left_give_503(load_handler: Callable[[], Any], dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_long_history_handler(load_handler, dynamodb, monkeypatch)
    module._service._store._client.batch_get_item = lambda **kwargs: {
        "Responses": {TABLE_NAME: []},
        "UnprocessedKeys": kwargs["RequestItems"],
    }

    status, body, headers = call_api(module, "/recommendations/target")

    assert status == 503
    assert "recommendations" not in body
    assert headers["Retry-After"] == "1"
