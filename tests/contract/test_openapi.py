"""docs/openapi.yaml checked on its own, against template.yaml and against the handler.

The live tests run the whole local stack: the local front end, src/app.py and dynalite on
127.0.0.1, with the sample log of tools/fuzz_api.py loaded through the loader. Every response
body must validate against the schema that the document gives for its route and status code.
"""

from __future__ import annotations

import http.client
import importlib
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import yaml
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_openapi_document

from tools.dynalite import free_port
from tools.fuzz_api import OPENAPI_PATH, load_sample_log, sample_history
from tools.template_table import api_routes, load_template

if TYPE_CHECKING:
    from tests.conftest import LocalTable
    from tools.local_api import LocalApiServer

REPO_ROOT = Path(__file__).resolve().parents[2]
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
USER_ROUTE = "/recommendations/{user_id}"
NO_USER_ROUTE = "/recommendations"
ERROR_STATUSES = ("400", "404", "500", "503")

# alice@example.com has history in the sample log and gets two recommendations.
ALICE = "alice%40example.com"


def load_document() -> dict[str, Any]:
    """Parse docs/openapi.yaml."""
    return yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))


DOCUMENT = load_document()


def resolve(node: Any, document: dict[str, Any] = DOCUMENT) -> Any:
    """Return `node` with every local "$ref" replaced by the part of `document` it names."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolve(target, document)
        return {key: resolve(value, document) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(item, document) for item in node]
    return node


def documented_response(route: str, status: int | str) -> dict[str, Any]:
    """Return the resolved response object of GET `route` for `status`."""
    responses = DOCUMENT["paths"][route]["get"]["responses"]
    return resolve(responses[str(status)])


def body_schema(route: str, status: int | str) -> dict[str, Any]:
    """Return the JSON body schema of GET `route` for `status`."""
    return documented_response(route, status)["content"]["application/json"]["schema"]


def schema_errors(instance: Any, schema: dict[str, Any]) -> list[str]:
    """Validate `instance` against an OpenAPI 3.0 schema object; return the error messages."""
    validator = OAS30Validator(schema)
    return [error.message for error in validator.iter_errors(instance)]


def component_schema(name: str) -> dict[str, Any]:
    return resolve(DOCUMENT["components"]["schemas"][name])


def documented_routes() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in DOCUMENT["paths"].items()
        for method in operations
        if method in HTTP_METHODS
    }


# --------------------------------------------------------------------------- the document


def test_document_is_valid_openapi() -> None:
    validate_openapi_document(DOCUMENT)  # raises OpenAPIValidationError with the location


def test_document_is_openapi_3_0() -> None:
    assert DOCUMENT["openapi"].startswith("3.0.")


def test_template_routes_are_documented() -> None:
    template_routes = set(api_routes())

    assert template_routes, "template.yaml has no Api events"
    assert template_routes - documented_routes() == set()


def test_documented_routes_exist_in_template() -> None:
    assert documented_routes() - set(api_routes()) == set()


def _template_definition_body() -> dict[str, Any] | None:
    api = load_template()["Resources"].get("RecommendationsApi", {})
    return api.get("Properties", {}).get("DefinitionBody")


def test_template_definition_body_routes_match() -> None:
    definition = _template_definition_body()
    if definition is None:
        pytest.skip("the API in template.yaml has no DefinitionBody")
    # SAM adds the CORS preflight (OPTIONS) methods, which API Gateway handles without the function.
    template_routes = {
        (method.upper(), path)
        for path, operations in definition["paths"].items()
        for method in operations
        if method in HTTP_METHODS and method != "options"
    }

    assert template_routes == documented_routes()


def test_security_schemes_match_template() -> None:
    definition = _template_definition_body()
    if definition is None:
        pytest.skip("the API in template.yaml has no DefinitionBody")
    template_schemes = definition["components"]["securitySchemes"]
    documented_schemes = DOCUMENT["components"]["securitySchemes"]

    assert set(documented_schemes) == set(template_schemes)
    for name, scheme in template_schemes.items():
        for key in ("type", "in", "name"):
            assert documented_schemes[name][key] == scheme[key], f"{name}.{key}"
    assert documented_schemes["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"


def test_auth_schemes_are_alternatives() -> None:
    # Each entry of a security list is one way to satisfy it.
    assert DOCUMENT["security"] == [{"sigv4": []}, {"api_key": []}]


def test_api_key_scheme_is_x_api_key_header() -> None:
    scheme = DOCUMENT["components"]["securitySchemes"]["api_key"]

    assert scheme["type"] == "apiKey"
    assert scheme["in"] == "header"
    assert scheme["name"] == "x-api-key"


@pytest.mark.parametrize("route", [USER_ROUTE, NO_USER_ROUTE])
@pytest.mark.parametrize("status", ERROR_STATUSES)
def test_error_statuses_documented(route: str, status: str) -> None:
    response = documented_response(route, status)

    assert "application/json" in response["content"]


def test_user_route_documents_200() -> None:
    assert body_schema(USER_ROUTE, 200) == component_schema("Recommendations")


def test_no_user_route_never_returns_200() -> None:
    assert "200" not in DOCUMENT["paths"][NO_USER_ROUTE]["get"]["responses"]


@pytest.mark.parametrize("route", [USER_ROUTE, NO_USER_ROUTE])
def test_503_documents_retry_after(route: str) -> None:
    header = documented_response(route, 503)["headers"]["Retry-After"]

    assert header["required"] is True
    assert header["schema"]["type"] == "integer"


def _parameter(name: str) -> dict[str, Any]:
    parameters = resolve(DOCUMENT["paths"][USER_ROUTE]["get"]["parameters"])
    return next(parameter for parameter in parameters if parameter["name"] == name)


def test_parameter_limits_match_code(load_app: Callable[..., Any]) -> None:
    app = load_app({"TABLE_NAME": "contract-constants"})
    config = importlib.import_module("config")  # the module that this import of app uses

    limit = _parameter("limit")["schema"]
    exclude = _parameter("exclude")["schema"]
    user_id = _parameter("user_id")["schema"]
    assert limit["minimum"] == 1
    assert limit["maximum"] == config.MAX_LIMIT
    assert limit["default"] == config.DEFAULT_LIMIT
    assert exclude["maxItems"] == config.MAX_EXCLUDED_ITEMS
    assert exclude["items"]["minLength"] == 1
    # maxLength counts characters; a value within it can still be over the byte limit.
    assert exclude["items"]["maxLength"] == config.MAX_ITEM_ID_BYTES
    assert user_id["minLength"] == 1
    assert user_id["maxLength"] == app.MAX_USER_ID_BYTES
    assert _parameter("explain")["schema"] == {"type": "boolean", "default": False}
    assert _parameter("user_id")["in"] == "path"


def _media_examples(node: Any) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    # Yields (location, example value, schema) for every media type object with examples.
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "application/json" and isinstance(value, dict) and "schema" in value:
                if "example" in value:
                    yield key, value["example"], value["schema"]
                for name, example in value.get("examples", {}).items():
                    yield name, example["value"], value["schema"]
            else:
                yield from _media_examples(value)


def test_response_examples_match_schemas() -> None:
    examples = list(_media_examples(resolve(DOCUMENT)))

    assert len(examples) >= 8
    for location, value, schema in examples:
        assert schema_errors(value, schema) == [], location


def test_component_examples_match_schemas() -> None:
    for name in ("DirectInvocationEvent", "DirectInvocationError"):
        schema = component_schema(name)
        assert schema_errors(schema["example"], schema) == [], name


def test_sample_direct_event_matches_schema() -> None:
    event = json.loads((REPO_ROOT / "events" / "direct-invoke.json").read_text(encoding="utf-8"))

    assert schema_errors(event, component_schema("DirectInvocationEvent")) == []


# --------------------------------------------------------------------------- live responses


def http_get(base_url: str, target: str) -> tuple[int, http.client.HTTPMessage, Any]:
    """GET `target` verbatim; return (status, headers, JSON body)."""
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        payload = response.read()
        return response.status, response.headers, json.loads(payload)
    finally:
        connection.close()


@pytest.fixture(scope="module")
def sample_table(local_table: LocalTable, tmp_path_factory: pytest.TempPathFactory) -> LocalTable:
    load_sample_log(local_table.client, local_table.name, tmp_path_factory.mktemp("sample-log"))
    return local_table


@pytest.fixture
def api(
    sample_table: LocalTable,
    load_app: Callable[..., Any],
    serve_api: Callable[..., tuple[LocalApiServer, str]],
) -> Iterator[str]:
    app = load_app(sample_table.handler_env())
    server, base_url = serve_api(app.lambda_handler)
    yield base_url
    # An exception that escaped the handler became a 502 and was counted here.
    assert server.handler_failures == 0


def route_of(target: str) -> str | None:
    path = target.partition("?")[0]
    if path == NO_USER_ROUTE:
        return NO_USER_ROUTE
    if path.startswith(NO_USER_ROUTE + "/") and "/" not in path[len(NO_USER_ROUTE) + 1 :]:
        return USER_ROUTE
    return None


def assert_documented(
    status: int, headers: http.client.HTTPMessage, body: Any, target: str
) -> None:
    route = route_of(target)
    schema = (
        body_schema(route, status)
        if route is not None
        else resolve(DOCUMENT["components"]["responses"]["NotFound"])["content"][
            "application/json"
        ]["schema"]
    )
    assert headers.get("Content-Type", "").startswith("application/json")
    assert schema_errors(body, schema) == []


LONG_EXCLUDE = "x" * 1025
MULTIBYTE_USER = "%C3%A9" * 1025  # 1025 characters, 2050 bytes of UTF-8

# (target, expected status, field named by a 400 or None)
CASES = [
    (f"/recommendations/{ALICE}", 200, None),
    (f"/recommendations/{ALICE}?explain=true", 200, None),
    (f"/recommendations/{ALICE}?explain=false&limit=1", 200, None),
    (f"/recommendations/{ALICE}?exclude=B07PGL2ZSL", 200, None),
    (f"/recommendations/{ALICE}?exclude=B07PGL2ZSL&exclude=B00X4WHP5E", 200, None),
    ("/recommendations/nobody-at-all", 200, None),
    ("/recommendations/a%2Fb%20c?explain=TRUE", 200, None),
    ("/recommendations", 400, "user_id"),
    (f"/recommendations/{ALICE}?limit=0", 400, "limit"),
    (f"/recommendations/{ALICE}?limit=101", 400, "limit"),
    (f"/recommendations/{ALICE}?limit=abc", 400, "limit"),
    (f"/recommendations/{ALICE}?limit=", 400, "limit"),
    (f"/recommendations/{ALICE}?limit=%EF%BC%95", 400, "limit"),  # a full-width digit 5
    (f"/recommendations/{ALICE}?limit=2&limit=3", 400, "limit"),
    (f"/recommendations/{ALICE}?exclude=", 400, "exclude"),
    (f"/recommendations/{ALICE}?exclude={LONG_EXCLUDE}", 400, "exclude"),
    (f"/recommendations/{ALICE}?" + "&".join(f"exclude=i{n}" for n in range(101)), 400, "exclude"),
    (f"/recommendations/{ALICE}?explain=yes", 400, "explain"),
    (f"/recommendations/{ALICE}?explain=true&explain=false", 400, "explain"),
    ("/recommendations/" + "u" * 2049, 400, "user_id"),
    ("/recommendations/" + MULTIBYTE_USER, 400, "user_id"),
    ("/recommendations/%FF", 400, "user_id"),
    ("/nothing-here", 404, None),
    ("/recommendations/alice/extra", 404, None),
]


@pytest.mark.http
@pytest.mark.parametrize(
    ("target", "expected_status", "field"), CASES, ids=[c[0][:60] for c in CASES]
)
def test_live_response_documented(
    api: str, target: str, expected_status: int, field: str | None
) -> None:
    status, headers, body = http_get(api, target)

    assert status == expected_status
    assert_documented(status, headers, body, target)
    if field is not None:
        assert body["field"] == field


@pytest.mark.http
def test_explain_names_history_item(api: str) -> None:
    status, _, body = http_get(api, f"/recommendations/{ALICE}?explain=true")
    history = sample_history("alice@example.com")

    assert status == 200
    assert body["recommendations"], "alice@example.com should get recommendations"
    for entry in body["recommendations"]:
        assert entry["because"] in history, entry


@pytest.mark.http
def test_no_because_without_explain(api: str) -> None:
    _, _, default = http_get(api, f"/recommendations/{ALICE}")
    _, _, explicit_false = http_get(api, f"/recommendations/{ALICE}?explain=false")

    assert default["recommendations"]
    assert all("because" not in entry for entry in default["recommendations"])
    assert all("because" not in entry for entry in explicit_false["recommendations"])


@pytest.mark.http
def test_exclude_removes_only_named_items(api: str) -> None:
    _, _, full = http_get(api, f"/recommendations/{ALICE}")
    item_ids = [entry["item_id"] for entry in full["recommendations"]]
    assert len(item_ids) >= 2, f"the sample log should give alice two items, got {item_ids}"

    _, _, without_first = http_get(api, f"/recommendations/{ALICE}?exclude={item_ids[0]}")
    remaining = [entry["item_id"] for entry in without_first["recommendations"]]

    assert item_ids[0] not in remaining
    assert remaining == item_ids[1:]


@pytest.mark.http
def test_history_never_recommended(api: str) -> None:
    _, _, body = http_get(api, f"/recommendations/{ALICE}?limit=100")
    item_ids = {entry["item_id"] for entry in body["recommendations"]}

    assert item_ids
    assert not item_ids & sample_history("alice@example.com")


@pytest.mark.http
def test_user_id_decoded_once(api: str) -> None:
    _, _, slash = http_get(api, "/recommendations/a%2Fb%20c")
    _, _, percent = http_get(api, "/recommendations/50%2541")
    _, _, plus = http_get(api, "/recommendations/a+b")

    assert slash["user_id"] == "a/b c"
    assert slash["recommendations"], "the sample user 'a/b c' has history"
    assert percent["user_id"] == "50%41"
    assert plus["user_id"] == "a+b"


@pytest.mark.http
def test_unknown_user_gets_empty_list(api: str) -> None:
    status, _, body = http_get(api, "/recommendations/nobody-at-all")

    assert status == 200
    assert body == {"user_id": "nobody-at-all", "recommendations": []}


@pytest.mark.http
def test_user_without_co_users_gets_empty_list(api: str) -> None:
    # erin's only item has no other user in the sample log.
    status, _, body = http_get(api, "/recommendations/erin")

    assert sample_history("erin")
    assert status == 200
    assert body == {"user_id": "erin", "recommendations": []}


@pytest.mark.http
def test_500_when_table_missing(
    sample_table: LocalTable,
    load_app: Callable[..., Any],
    serve_api: Callable[..., tuple[LocalApiServer, str]],
) -> None:
    environment = {**sample_table.handler_env(), "TABLE_NAME": f"missing-{uuid.uuid4().hex[:8]}"}
    app = load_app(environment)
    server, base_url = serve_api(app.lambda_handler)

    status, headers, body = http_get(base_url, f"/recommendations/{ALICE}")

    assert status == 500
    assert_documented(status, headers, body, f"/recommendations/{ALICE}")
    assert body["request_id"] == headers.get("x-amzn-RequestId")
    assert server.handler_failures == 0


@pytest.mark.http
def test_503_when_dynamodb_unreachable(
    sample_table: LocalTable,
    load_app: Callable[..., Any],
    serve_api: Callable[..., tuple[LocalApiServer, str]],
) -> None:
    # Nothing listens on a port that free_port() just released, so connections are refused.
    environment = {
        **sample_table.handler_env(),
        "AWS_ENDPOINT_URL_DYNAMODB": f"http://127.0.0.1:{free_port()}",
        "DYNAMODB_MAX_ATTEMPTS": "1",
        "DYNAMODB_CONNECT_TIMEOUT_SECONDS": "0.5",
    }
    app = load_app(environment)
    server, base_url = serve_api(app.lambda_handler)

    status, headers, body = http_get(base_url, f"/recommendations/{ALICE}")

    assert status == 503
    assert_documented(status, headers, body, f"/recommendations/{ALICE}")
    assert headers.get("Retry-After") == "1"
    assert server.handler_failures == 0


# --------------------------------------------------------------------------- handler alone


class _Context:
    """The Lambda context attributes that the handler reads."""

    function_name = "RecommendationsFunction"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:RecommendationsFunction"
    aws_request_id = "c0ffee00-0000-4000-8000-000000000000"


def test_handler_404_documented(load_app: Callable[..., Any]) -> None:
    app = load_app({"TABLE_NAME": "contract-404"})
    event = json.loads(
        (REPO_ROOT / "events" / "api-get-recommendations.json").read_text(encoding="utf-8")
    )
    event.update({"path": "/elsewhere", "resource": "/elsewhere", "pathParameters": None})
    event["requestContext"].update({"path": "/elsewhere", "resourcePath": "/elsewhere"})

    response = app.lambda_handler(event, _Context())
    body = json.loads(response["body"])

    assert response["statusCode"] == 404
    assert schema_errors(body, body_schema(USER_ROUTE, 404)) == []


@pytest.mark.http
def test_direct_invocation_success_documented(
    sample_table: LocalTable, load_app: Callable[..., Any]
) -> None:
    app = load_app(sample_table.handler_env())
    event = {"user_id": "alice@example.com", "limit": 5, "explain": True}

    result = app.lambda_handler(event, _Context())

    assert schema_errors(event, component_schema("DirectInvocationEvent")) == []
    assert schema_errors(result, component_schema("Recommendations")) == []
    assert result["recommendations"]


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"user_id": ""}, "user_id"),
        ({"limit": 5}, "user_id"),
        ({"user_id": "u", "limt": 5}, "limt"),
        ({"user_id": "u", "limit": 0}, "limit"),
        ({"user_id": "u", "exclude": "B00X4WHP5E"}, "exclude"),
        ({"user_id": "u", "explain": "maybe"}, "explain"),
        (["not", "an", "object"], "event"),
    ],
)
def test_direct_invocation_errors_documented(
    load_app: Callable[..., Any], event: Any, field: str
) -> None:
    app = load_app({"TABLE_NAME": "contract-direct"})

    result = app.lambda_handler(event, _Context())

    assert schema_errors(event, component_schema("DirectInvocationEvent")) != []
    assert schema_errors(result, component_schema("DirectInvocationError")) == []
    assert result["statusCode"] == 400
    assert result["field"] == field
