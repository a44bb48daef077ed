"""Lambda handler: parses and validates the request, calls the service, shapes the response.

Two callers share one handler:

- API Gateway REST proxy events for ``GET /recommendations/{user_id}?limit=N&exclude=ID&explain=true``,
  which get an HTTP response with a JSON body.
- Direct invocation with ``{"user_id": "...", "limit": N, "exclude": [...], "explain": bool}``
  (all but ``user_id`` optional), which gets the same JSON object as a plain dict, or
  ``{"statusCode": 4xx/5xx, "message": ...}``.

Both return ``{"user_id": ..., "recommendations": [{"item_id": ..., "score": ...}]}``.
``GET /items/{item_id}/similar`` returns ``{"item_id": ..., "similar": [...]}`` from the model.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import (
    APIGatewayRestResolver,
    CORSConfig,
    Response,
    content_types,
)
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from config import (
    CORS_ALLOW_ORIGIN,
    DEFAULT_LIMIT,
    DEFAULT_METRICS_NAMESPACE,
    MAX_EXCLUDED_ITEMS,
    MAX_ITEM_ID_BYTES,
    MAX_LIMIT,
    METRICS_NAMESPACE,
    ConfigurationError,
    Settings,
    load_settings,
)
from interaction_store import InteractionStore, StoreError, StoreUnavailableError, create_client
from model_store import MODEL_TABLE_NAME, ModelStore, cache_seconds_from_env
from service import ModelNotBuiltError, RecommendationResult, RecommendationService

# DynamoDB limits on key attributes, in UTF-8 bytes.
MAX_USER_ID_BYTES = 2048
RETRY_AFTER_SECONDS = "1"

logger = Logger()
# Tracing turns itself off outside Lambda (tests, the local front end).
tracer = Tracer()
metrics = Metrics(namespace=os.environ.get(METRICS_NAMESPACE) or DEFAULT_METRICS_NAMESPACE)
# With an allowed origin set, responses carry the CORS headers that browsers
# check. API Gateway responds to the preflight OPTIONS request itself.
_cors_origin = os.environ.get(CORS_ALLOW_ORIGIN, "").strip()
app = APIGatewayRestResolver(cors=CORSConfig(allow_origin=_cors_origin) if _cors_origin else None)


class RequestValidationError(ValueError):
    """The request is invalid; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _build_service() -> tuple[RecommendationService | None, ConfigurationError | None]:
    # Runs once per container, during the init phase, so that the settings are
    # parsed and the client and thread pool are created before the first request.
    try:
        settings: Settings = load_settings()
        model_cache_seconds = cache_seconds_from_env()
    except ConfigurationError as error:
        logger.error("Invalid configuration", extra={"error": str(error)})
        return None, error
    executor = ThreadPoolExecutor(
        max_workers=settings.max_concurrent_queries, thread_name_prefix="dynamodb-query"
    )
    client = create_client(settings)
    store = InteractionStore(client, settings, executor)
    # Without a model table the service computes every request online.
    model_table = os.environ.get(MODEL_TABLE_NAME, "").strip()
    model_store = (
        ModelStore(client, model_table, executor, cache_seconds=model_cache_seconds)
        if model_table
        else None
    )
    return RecommendationService(store, settings, model_store), None


_service, _configuration_error = _build_service()


def check_key_size(value: str, field: str, label: str, max_bytes: int) -> None:
    """Raise RequestValidationError unless ``value`` encodes to at most ``max_bytes`` of UTF-8."""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise RequestValidationError(field, f"{label} is not valid Unicode text") from None
    if size > max_bytes:
        raise RequestValidationError(
            field, f"{label} is {size} bytes in UTF-8; the maximum is {max_bytes}"
        )


def validate_user_id(value: Any) -> str:
    if not isinstance(value, str):
        raise RequestValidationError("user_id", "user_id must be a string")
    if not value:
        raise RequestValidationError("user_id", "user_id must not be empty")
    check_key_size(value, "user_id", "user_id", MAX_USER_ID_BYTES)
    return value


def validate_limit(value: Any) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if isinstance(value, bool):
        raise RequestValidationError("limit", "limit must be an integer")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii() or not text.isdigit():
            raise RequestValidationError(
                "limit", f"limit must be an integer from 1 to {MAX_LIMIT}, got {value[:20]!r}"
            )
        value = int(text)
    if not isinstance(value, int):
        raise RequestValidationError("limit", f"limit must be an integer from 1 to {MAX_LIMIT}")
    if not 1 <= value <= MAX_LIMIT:
        raise RequestValidationError("limit", f"limit must be from 1 to {MAX_LIMIT}, got {value}")
    return value


def validate_exclude(values: Any) -> frozenset[str]:
    if values is None:
        return frozenset()
    if not isinstance(values, list):
        raise RequestValidationError("exclude", "exclude must be a list of item ids")
    if len(values) > MAX_EXCLUDED_ITEMS:
        raise RequestValidationError(
            "exclude", f"exclude has {len(values)} item ids; the maximum is {MAX_EXCLUDED_ITEMS}"
        )
    for value in values:
        if not isinstance(value, str) or not value:
            raise RequestValidationError("exclude", "each exclude value must be a non-empty string")
        check_key_size(value, "exclude", "an exclude value", MAX_ITEM_ID_BYTES)
    return frozenset(values)


def validate_explain(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise RequestValidationError("explain", "explain must be true or false")


def _recommend(user_id: str, limit: int, exclude: frozenset[str], explain: bool) -> dict[str, Any]:
    if _service is None:
        raise StoreError(f"configuration is invalid: {_configuration_error}")
    result: RecommendationResult = _service.recommend(user_id, limit, exclude=exclude, explain=explain)
    logger.info("Recommendations served", extra=result.log_fields())
    _record_metrics(result)

    recommendations = []
    for rec in result.recommendations:
        row: dict[str, Any] = {"item_id": rec.item_id, "score": round(rec.score, 6)}
        if explain and rec.because is not None:
            row["because"] = rec.because
        recommendations.append(row)
    body: dict[str, Any] = {"user_id": user_id, "recommendations": recommendations}
    if result.source == "popular":
        # Marks a list that is not personal: the user has no interactions yet.
        body["source"] = "popular"
    return body


def _similar(item_id: str, limit: int) -> dict[str, Any]:
    if _service is None:
        raise StoreError(f"configuration is invalid: {_configuration_error}")
    result = _service.similar_items(item_id, limit)
    logger.info("Similar items served", extra=result.log_fields())
    metrics.add_metric(name="SimilarItemsLatency", unit=MetricUnit.Milliseconds, value=result.elapsed_ms)
    return {
        "item_id": item_id,
        "similar": [{"item_id": rec.item_id, "score": round(rec.score, 6)} for rec in result.similar],
    }


def _record_metrics(result: RecommendationResult) -> None:
    fields = result.log_fields()
    metrics.add_metric(name="RecommendationLatency", unit=MetricUnit.Milliseconds, value=result.elapsed_ms)
    metrics.add_metric(name="CandidatesScored", unit=MetricUnit.Count, value=result.candidates)
    metrics.add_metric(name="DynamoDBCalls", unit=MetricUnit.Count, value=fields["dynamodb_calls"])
    metrics.add_metric(name="ItemsRead", unit=MetricUnit.Count, value=fields["items_read"])
    metrics.add_metric(name="ConsumedReadCapacity", unit=MetricUnit.Count, value=fields["consumed_capacity"])
    if not result.recommendations:
        metrics.add_metric(name="EmptyResults", unit=MetricUnit.Count, value=1)
    if result.source == "online" and _service is not None and _service.has_model:
        metrics.add_metric(name="Fallbacks", unit=MetricUnit.Count, value=1)
    if result.fallback_seeds:
        # Seeds newer than the model, ranked online: a count that grows until the next build.
        metrics.add_metric(name="SeedsRankedOnline", unit=MetricUnit.Count, value=result.fallback_seeds)


def _record_error(status: int) -> None:
    name = "ClientErrors" if status < 500 else "ServerErrors"
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)


def _error_body(status: int, message: str, field: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message}
    if field is not None:
        body["field"] = field
    if status >= 500:
        body["request_id"] = logger.get_correlation_id()
    return body


def _json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(body),
        headers=headers,
    )


def decode_path_segment(value: str, field: str) -> str:
    """Percent-decode one path segment exactly once, as REST APIs deliver it still encoded."""
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise RequestValidationError(field, f"{field} is not valid percent-encoded UTF-8") from None


def single_query_value(name: str) -> str | None:
    """Return the one value of query parameter ``name``, None when absent."""
    query = app.current_event.multi_value_query_string_parameters or {}
    values = query.get(name) or []
    if len(values) > 1:
        raise RequestValidationError(name, f"{name} must be given at most once")
    return values[0] if values else None


@app.get("/recommendations/<user_id>")
def get_recommendations(user_id: str) -> dict[str, Any]:
    decoded_user_id = decode_path_segment(user_id, "user_id")
    limit = validate_limit(single_query_value("limit"))
    query = app.current_event.multi_value_query_string_parameters or {}
    exclude = validate_exclude(query.get("exclude"))
    explain = validate_explain(single_query_value("explain"))
    return _recommend(validate_user_id(decoded_user_id), limit, exclude, explain)


def validate_item_id(value: str) -> str:
    if not value:
        raise RequestValidationError("item_id", "item_id must not be empty")
    check_key_size(value, "item_id", "item_id", MAX_ITEM_ID_BYTES)
    return value


@app.get("/items/<item_id>/similar")
def get_similar_items(item_id: str) -> dict[str, Any]:
    decoded_item_id = decode_path_segment(item_id, "item_id")
    limit = validate_limit(single_query_value("limit"))
    return _similar(validate_item_id(decoded_item_id), limit)


@app.get("/recommendations")
def get_recommendations_without_user() -> dict[str, Any]:
    raise RequestValidationError("user_id", "user_id is required: GET /recommendations/{user_id}")


@app.exception_handler(RequestValidationError)
def handle_validation_error(error: RequestValidationError) -> Response:
    logger.info("Rejected invalid request", extra={"field": error.field, "reason": error.message})
    _record_error(400)
    return _json_response(400, _error_body(400, error.message, error.field))


@app.exception_handler(ModelNotBuiltError)
def handle_model_not_built(error: ModelNotBuiltError) -> Response:
    logger.warning("Similar items requested before the first model build")
    _record_error(503)
    body = _error_body(503, "The similarity model has not been built yet; retry later.")
    return _json_response(503, body, headers={"Retry-After": "60"})


@app.exception_handler(StoreUnavailableError)
def handle_store_unavailable(error: StoreUnavailableError) -> Response:
    logger.warning("DynamoDB unavailable", extra={"error_code": error.error_code})
    _record_error(503)
    body = _error_body(503, "The recommendation store is busy or unreachable; retry later.")
    return _json_response(503, body, headers={"Retry-After": RETRY_AFTER_SECONDS})


@app.exception_handler(StoreError)
def handle_store_error(error: StoreError) -> Response:
    logger.error("DynamoDB error", extra={"error_code": error.error_code, "error": str(error)})
    _record_error(500)
    return _json_response(500, _error_body(500, "Internal error while reading interactions."))


@app.not_found
def handle_not_found(error: Exception) -> Response:
    # Registered explicitly, or the catch-all handler below would turn 404 into 500.
    path = app.current_event.path
    _record_error(404)
    return _json_response(404, {"message": f"No route for GET {path[:200]}"})


@app.exception_handler(Exception)
def handle_unexpected_error(error: Exception) -> Response:
    logger.exception("Unexpected error")
    _record_error(500)
    return _json_response(500, _error_body(500, "Internal error."))


def _handle_direct_invocation(event: Any) -> dict[str, Any]:
    try:
        if not isinstance(event, dict):
            raise RequestValidationError(
                "event", 'the event must be a JSON object like {"user_id": "...", "limit": 10}'
            )
        unknown = sorted(set(event) - {"user_id", "limit", "exclude", "explain"})
        if unknown:
            raise RequestValidationError(unknown[0], f"unknown field {unknown[0]!r}")
        if "user_id" not in event:
            raise RequestValidationError("user_id", "user_id is required")
        user_id = validate_user_id(event["user_id"])
        limit = validate_limit(event.get("limit"))
        exclude = validate_exclude(event.get("exclude"))
        explain = validate_explain(event.get("explain"))
        return _recommend(user_id, limit, exclude, explain)
    except RequestValidationError as error:
        logger.info("Rejected invalid event", extra={"field": error.field, "reason": error.message})
        _record_error(400)
        return {"statusCode": 400, **_error_body(400, error.message, error.field)}
    except StoreUnavailableError as error:
        logger.warning("DynamoDB unavailable", extra={"error_code": error.error_code})
        _record_error(503)
        return {
            "statusCode": 503,
            **_error_body(503, "The recommendation store is busy or unreachable; retry later."),
        }
    except StoreError as error:
        logger.error("DynamoDB error", extra={"error_code": error.error_code, "error": str(error)})
        _record_error(500)
        return {"statusCode": 500, **_error_body(500, "Internal error while reading interactions.")}


def _is_api_gateway_event(event: Any) -> bool:
    return isinstance(event, dict) and "httpMethod" in event and "requestContext" in event


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    if _is_api_gateway_event(event):
        request_id = (event.get("requestContext") or {}).get("requestId")
        logger.set_correlation_id(request_id or context.aws_request_id)
        return app.resolve(event, context)

    logger.set_correlation_id(context.aws_request_id)
    try:
        return _handle_direct_invocation(event)
    except Exception:
        logger.exception("Unexpected error")
        _record_error(500)
        return {"statusCode": 500, **_error_body(500, "Internal error.")}
