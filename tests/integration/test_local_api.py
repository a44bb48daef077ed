"""The local API front end: HTTP request to API Gateway REST (v1) proxy event and back.

A recording handler replaces the Lambda function, so each test sees the exact event that
the front end built. Requests go through http.client, which sends the path bytes as
given, so percent-encoding reaches the server untouched.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from tools import local_api
from tools.local_api import LocalApiServer, NonLoopbackHostError, validate_host

ROUTES = [
    ("GET", "/recommendations/{user_id}"),
    ("POST", "/items"),
    ("ANY", "/files/{proxy+}"),
]

ServeApi = Callable[..., tuple[LocalApiServer, str]]


class RecordingHandler:
    """A Lambda handler that records each (event, context) and returns a fixed response."""

    def __init__(self, response: Any = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.contexts: list[Any] = []
        self.response = response if response is not None else {"statusCode": 200, "body": "ok"}

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        self.events.append(event)
        self.contexts.append(context)
        return self.response


def send(
    base_url: str,
    method: str,
    target: str,
    *,
    body: bytes | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """Send one request with `target` written verbatim on the request line."""
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        connection.putrequest(method, target)
        for name, value in headers or []:
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


@pytest.fixture
def recorder() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
def base_url(serve_api: ServeApi, recorder: RecordingHandler) -> str:
    _, url = serve_api(recorder, routes=ROUTES)
    return url


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("raw_id", "decoded_id"),
    [
        ("a%40b.com", "a@b.com"),
        ("jane%20doe", "jane doe"),
        ("jos%C3%A9", "josé"),
        ("50%2541", "50%41"),
        ("plain-42", "plain-42"),
    ],
)
def test_path_raw_parameters_decoded(
    base_url: str, recorder: RecordingHandler, raw_id: str, decoded_id: str
) -> None:
    status, _, _ = send(base_url, "GET", f"/recommendations/{raw_id}")

    assert status == 200
    event = recorder.events[0]
    assert event["path"] == f"/recommendations/{raw_id}"
    assert event["pathParameters"] == {"user_id": decoded_id}
    assert event["resource"] == "/recommendations/{user_id}"
    assert event["requestContext"]["resourcePath"] == "/recommendations/{user_id}"
    assert event["requestContext"]["path"] == f"/recommendations/{raw_id}"


def test_greedy_path_parameter(base_url: str, recorder: RecordingHandler) -> None:
    status, _, _ = send(base_url, "DELETE", "/files/reports/2024/q1%20final.csv")

    assert status == 200
    event = recorder.events[0]
    assert event["httpMethod"] == "DELETE"
    assert event["resource"] == "/files/{proxy+}"
    assert event["pathParameters"] == {"proxy": "reports/2024/q1 final.csv"}


def test_plain_get_event_fields(base_url: str, recorder: RecordingHandler) -> None:
    send(base_url, "GET", "/recommendations/u1")

    event = recorder.events[0]
    assert event["httpMethod"] == "GET"
    assert event["body"] is None
    assert event["isBase64Encoded"] is False
    assert event["stageVariables"] is None
    assert event["queryStringParameters"] is None
    assert event["multiValueQueryStringParameters"] is None
    context = event["requestContext"]
    assert context["stage"] == "local"
    assert context["httpMethod"] == "GET"
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["requestId"]


def test_request_ids_differ(base_url: str, recorder: RecordingHandler) -> None:
    send(base_url, "GET", "/recommendations/u1")
    send(base_url, "GET", "/recommendations/u1")

    first, second = (event["requestContext"]["requestId"] for event in recorder.events)
    assert first != second


def test_stage_not_in_request_context_path(base_url: str, recorder: RecordingHandler) -> None:
    # Powertools strips "/{stage}" from the route path only when requestContext.path starts
    # with it; a "/local" prefix there would make every route miss.
    send(base_url, "GET", "/recommendations/u1")

    context = recorder.events[0]["requestContext"]
    assert not context["path"].startswith(f"/{context['stage']}")


# --------------------------------------------------------------------------- query strings


def test_query_single_and_multi_valued(base_url: str, recorder: RecordingHandler) -> None:
    send(base_url, "GET", "/recommendations/u1?limit=5&tag=a&tag=b&q=caf%C3%A9&empty=")

    event = recorder.events[0]
    assert event["queryStringParameters"] == {"limit": "5", "tag": "b", "q": "café", "empty": ""}
    assert event["multiValueQueryStringParameters"] == {
        "limit": ["5"],
        "tag": ["a", "b"],
        "q": ["café"],
        "empty": [""],
    }
    assert event["path"] == "/recommendations/u1"


def test_query_plus_is_space(base_url: str, recorder: RecordingHandler) -> None:
    send(base_url, "GET", "/recommendations/u1?q=a+b&r=a%2Bb")

    parameters = recorder.events[0]["queryStringParameters"]
    assert parameters["q"] == "a b"
    assert parameters["r"] == "a+b"


# --------------------------------------------------------------------------- headers and body


def test_headers_single_and_multi_valued(base_url: str, recorder: RecordingHandler) -> None:
    headers = [("X-Trace", "t-1"), ("X-Multi", "one"), ("X-Multi", "two")]
    send(base_url, "GET", "/recommendations/u1", headers=headers)

    event = recorder.events[0]
    assert event["headers"]["X-Trace"] == "t-1"
    assert event["headers"]["X-Multi"] == "two"
    assert event["multiValueHeaders"]["X-Multi"] == ["one", "two"]
    assert event["headers"]["X-Forwarded-For"] == "127.0.0.1"


def test_post_text_body(base_url: str, recorder: RecordingHandler) -> None:
    payload = json.dumps({"item_id": "é"}).encode("utf-8")
    status, _, _ = send(base_url, "POST", "/items", body=payload)

    assert status == 200
    event = recorder.events[0]
    assert event["body"] == payload.decode("utf-8")
    assert event["isBase64Encoded"] is False
    assert event["pathParameters"] is None


def test_post_binary_body_base64(base_url: str, recorder: RecordingHandler) -> None:
    payload = b"\x00\xff\xfe binary"
    send(base_url, "POST", "/items", body=payload)

    event = recorder.events[0]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == payload


# --------------------------------------------------------------------------- responses


def test_proxy_response_written(serve_api: ServeApi) -> None:
    handler = RecordingHandler(
        {
            "statusCode": 201,
            "headers": {"Content-Type": "text/plain", "X-One": "1"},
            "multiValueHeaders": {"X-Many": ["a", "b"]},
            "body": "créé",
        }
    )
    _, url = serve_api(handler, routes=ROUTES)

    status, headers, body = send(url, "GET", "/recommendations/u1")

    assert status == 201
    assert headers["Content-Type"] == "text/plain"
    assert headers["X-One"] == "1"
    assert headers.get_all("X-Many") == ["a", "b"]
    assert body == "créé".encode()


def test_base64_response_decoded(serve_api: ServeApi) -> None:
    payload = b"\x89PNG\x00\xff"
    handler = RecordingHandler(
        {"statusCode": 200, "body": base64.b64encode(payload).decode(), "isBase64Encoded": True}
    )
    _, url = serve_api(handler, routes=ROUTES)

    _, _, body = send(url, "GET", "/recommendations/u1")

    assert body == payload


def test_context_object(base_url: str, recorder: RecordingHandler) -> None:
    send(base_url, "GET", "/recommendations/u1")

    context = recorder.contexts[0]
    assert context.function_name == "RecommendationsFunction"
    assert context.invoked_function_arn.endswith(":function:RecommendationsFunction")
    assert isinstance(context.memory_limit_in_mb, int)
    assert context.aws_request_id
    assert context.aws_request_id != recorder.events[0]["requestContext"]["requestId"]
    assert 0 < context.get_remaining_time_in_millis() <= 900_000


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/nope"),
        ("POST", "/recommendations/u1"),
        ("GET", "/recommendations/u1/extra"),
        ("GET", "/recommendations/"),
    ],
)
def test_unknown_route_is_json_404(
    base_url: str, recorder: RecordingHandler, method: str, target: str
) -> None:
    status, headers, body = send(base_url, method, target)

    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"message": "Not Found"}
    assert recorder.events == []


@pytest.mark.parametrize("method", ["TRACE", "PROPFIND"])
def test_unknown_method_is_json_501(base_url: str, recorder: RecordingHandler, method: str) -> None:
    status, headers, body = send(base_url, method, "/recommendations/1")

    assert status == 501
    assert headers["Content-Type"] == "application/json"
    assert method in json.loads(body)["message"]
    assert recorder.events == []


def test_oversized_header_is_json_431(base_url: str, recorder: RecordingHandler) -> None:
    status, headers, body = send(base_url, "GET", "/recommendations/1", headers=[("X-Big", "a" * 70_000)])

    assert status == 431
    assert headers["Content-Type"] == "application/json"
    assert "message" in json.loads(body)
    assert recorder.events == []


def test_raising_handler_gives_502(serve_api: ServeApi, caplog: pytest.LogCaptureFixture) -> None:
    def explode(event: dict[str, Any], context: Any) -> Any:
        raise RuntimeError("boom in handler")

    server, url = serve_api(explode, routes=ROUTES)

    with caplog.at_level(logging.ERROR, logger=local_api.__name__):
        status, headers, body = send(url, "GET", "/recommendations/u1")

    assert status == 502
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"message": "Internal server error"}
    assert b"boom" not in body
    assert server.handler_failures == 1
    logged = [record for record in caplog.records if record.exc_info]
    assert len(logged) == 1
    assert "boom in handler" in str(logged[0].exc_info[1])


@pytest.mark.parametrize(
    "response",
    [
        None,
        {"body": "no status"},
        {"statusCode": 200, "body": {"not": "a string"}},
        {"statusCode": 200, "body": "%%%", "isBase64Encoded": True},
    ],
    ids=["none", "no-status", "dict-body", "bad-base64"],
)
def test_invalid_proxy_response_gives_502(serve_api: ServeApi, response: Any) -> None:
    def handler(event: dict[str, Any], context: Any) -> Any:
        return response

    server, url = serve_api(handler, routes=ROUTES)

    status, _, body = send(url, "GET", "/recommendations/u1")

    assert status == 502
    assert json.loads(body) == {"message": "Internal server error"}
    assert server.handler_failures == 1


def test_access_log_line(base_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=local_api.__name__):
        send(base_url, "GET", "/recommendations/a%40b.com?limit=2")

    lines = [record.getMessage() for record in caplog.records if record.name == local_api.__name__]
    access = [line for line in lines if line.startswith("GET ")]
    assert len(access) == 1
    assert access[0].startswith("GET /recommendations/a%40b.com 200 ")
    assert access[0].endswith(" ms")
    assert "limit" not in access[0]


# --------------------------------------------------------------------------- routes and hosts


def test_default_routes_from_template(serve_api: ServeApi, recorder: RecordingHandler) -> None:
    _, url = serve_api(recorder)

    status, _, _ = send(url, "GET", "/recommendations/u1")

    assert status == 200
    assert recorder.events[0]["resource"] == "/recommendations/{user_id}"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::", "10.0.0.1"])
def test_non_loopback_host_rejected(host: str) -> None:
    with pytest.raises(NonLoopbackHostError, match="loopback"):
        validate_host(host)


def test_serve_rejects_non_loopback_host() -> None:
    with pytest.raises(NonLoopbackHostError):
        local_api.serve_in_thread(0, host="0.0.0.0", handler=RecordingHandler(), routes=ROUTES)


def test_cli_rejects_non_loopback_host(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        local_api.main(["--host", "0.0.0.0", "--port", "0"])

    assert exit_info.value.code == 2
    assert "loopback" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.2", "127.0.0.2"),
        ("localhost", "127.0.0.1"),
        ("::1", "::1"),
    ],
)
def test_loopback_hosts_accepted(host: str, expected: str) -> None:
    assert validate_host(host) == expected
