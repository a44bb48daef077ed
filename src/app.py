"""Lambda handler: parses and validates the request, calls the service, shapes the response.

Two callers share one handler:

- API Gateway REST proxy events for ``GET /recommendations/{user_id}?limit=N``,
  answered with an HTTP response whose body is JSON.
- Direct invocation with ``{"user_id": "...", "limit": N}``, answered with the
  same JSON object as a plain dict, or ``{"statusCode": 4xx/5xx, "message": ...}``.

Both return ``{"user_id": ..., "recommendations": [{"item_id": ..., "score": ...}]}``.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.utilities.typing import LambdaContext

from config import DEFAULT_LIMIT, MAX_LIMIT, ConfigurationError, Settings, load_settings
from interaction_store import InteractionStore, StoreError, StoreUnavailableError, create_client
from service import RecommendationResult, RecommendationService

# DynamoDB limits on key attributes, in UTF-8 bytes.
MAX_USER_ID_BYTES = 2048
RETRY_AFTER_SECONDS = "1"

logger = Logger()
app = APIGatewayRestResolver()


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
    except ConfigurationError as error:
        logger.error("Invalid configuration", extra={"error": str(error)})
        return None, error
    executor = ThreadPoolExecutor(
        max_workers=settings.max_concurrent_queries, thread_name_prefix="dynamodb-query"
    )
    store = InteractionStore(create_client(settings), settings, executor)
    return RecommendationService(store, settings), None


_service, _configuration_error = _build_service()


def validate_user_id(value: Any) -> str:
    if not isinstance(value, str):
        raise RequestValidationError("user_id", "user_id must be a string")
    if not value:
        raise RequestValidationError("user_id", "user_id must not be empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise RequestValidationError("user_id", "user_id is not valid Unicode text") from None
    if size > MAX_USER_ID_BYTES:
        raise RequestValidationError(
            "user_id", f"user_id is {size} bytes in UTF-8; the maximum is {MAX_USER_ID_BYTES}"
        )
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


def _recommend(user_id: str, limit: int) -> dict[str, Any]:
    if _service is None:
        raise StoreError(f"configuration is invalid: {_configuration_error}")
    result: RecommendationResult = _service.recommend(user_id, limit)
    logger.info("Recommendations served", extra=result.log_fields())
    return {
        "user_id": user_id,
        "recommendations": [
            {"item_id": rec.item_id, "score": round(rec.score, 6)} for rec in result.recommendations
        ],
    }


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


@app.get("/recommendations/<user_id>")
def get_recommendations(user_id: str) -> dict[str, Any]:
    # REST APIs deliver the path still percent-encoded; decode it exactly once.
    try:
        decoded_user_id = unquote(user_id, errors="strict")
    except UnicodeDecodeError:
        raise RequestValidationError("user_id", "user_id is not valid percent-encoded UTF-8") from None

    query = app.current_event.multi_value_query_string_parameters or {}
    limit_values = query.get("limit") or []
    if len(limit_values) > 1:
        raise RequestValidationError("limit", "limit must be given at most once")
    limit = validate_limit(limit_values[0] if limit_values else None)
    return _recommend(validate_user_id(decoded_user_id), limit)


@app.get("/recommendations")
def get_recommendations_without_user() -> dict[str, Any]:
    raise RequestValidationError("user_id", "user_id is required: GET /recommendations/{user_id}")


@app.exception_handler(RequestValidationError)
def handle_validation_error(error: RequestValidationError) -> Response:
    logger.info("Rejected invalid request", extra={"field": error.field, "reason": error.message})
    return _json_response(400, _error_body(400, error.message, error.field))


@app.exception_handler(StoreUnavailableError)
def handle_store_unavailable(error: StoreUnavailableError) -> Response:
    logger.warning("DynamoDB unavailable", extra={"error_code": error.error_code})
    body = _error_body(503, "The recommendation store is busy or unreachable; retry later.")
    return _json_response(503, body, headers={"Retry-After": RETRY_AFTER_SECONDS})


@app.exception_handler(StoreError)
def handle_store_error(error: StoreError) -> Response:
    logger.error("DynamoDB error", extra={"error_code": error.error_code, "error": str(error)})
    return _json_response(500, _error_body(500, "Internal error while reading interactions."))


@app.not_found
def handle_not_found(error: Exception) -> Response:
    # Registered explicitly, or the catch-all handler below would turn 404 into 500.
    path = app.current_event.path
    return _json_response(404, {"message": f"No route for GET {path[:200]}"})


@app.exception_handler(Exception)
def handle_unexpected_error(error: Exception) -> Response:
    logger.exception("Unexpected error")
    return _json_response(500, _error_body(500, "Internal error."))


def _handle_direct_invocation(event: Any) -> dict[str, Any]:
    try:
        if not isinstance(event, dict):
            raise RequestValidationError(
                "event", 'the event must be a JSON object like {"user_id": "...", "limit": 10}'
            )
        unknown = sorted(set(event) - {"user_id", "limit"})
        if unknown:
            raise RequestValidationError(unknown[0], f"unknown field {unknown[0]!r}")
        if "user_id" not in event:
            raise RequestValidationError("user_id", "user_id is required")
        user_id = validate_user_id(event["user_id"])
        limit = validate_limit(event.get("limit"))
        return _recommend(user_id, limit)
    except RequestValidationError as error:
        logger.info("Rejected invalid event", extra={"field": error.field, "reason": error.message})
        return {"statusCode": 400, **_error_body(400, error.message, error.field)}
    except StoreUnavailableError as error:
        logger.warning("DynamoDB unavailable", extra={"error_code": error.error_code})
        return {
            "statusCode": 503,
            **_error_body(503, "The recommendation store is busy or unreachable; retry later."),
        }
    except StoreError as error:
        logger.error("DynamoDB error", extra={"error_code": error.error_code, "error": str(error)})
        return {"statusCode": 500, **_error_body(500, "Internal error while reading interactions.")}


def _is_api_gateway_event(event: Any) -> bool:
    return isinstance(event, dict) and "httpMethod" in event and "requestContext" in event


@logger.inject_lambda_context(clear_state=True)
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
        return {"statusCode": 500, **_error_body(500, "Internal error.")}
