"""Serve the template's API routes on 127.0.0.1 and invoke the Lambda handler like API Gateway.

Each request to a route declared by an `Api` event in template.yaml becomes an API Gateway
REST API (payload version 1.0) proxy event: the path stays percent-encoded as sent, while
pathParameters and query string values are decoded. The handler's proxy response is written
back as the HTTP response.

Differences from API Gateway, all deliberate:
- An unknown route or method returns 404 `{"message": "Not Found"}`; API Gateway returns 403
  `{"message": "Missing Authentication Token"}`.
- There is no stage in the URL: the stage is "local" in requestContext.stage only.
- Handler calls are serialized, as in one warm Lambda execution environment.
- The function's Timeout is reported by the context but not enforced: a slow call logs a
  warning.

    python -m tools.local_api [--port 3000] [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import importlib
import ipaddress
import json
import logging
import os
import re
import socket
import socketserver
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from tools.template_table import TEMPLATE_PATH, FunctionSettings, api_routes, function_settings

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
SRC_DIR = REPO_ROOT / "src"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000
STAGE = "local"
ACCOUNT_ID = "123456789012"  # placeholder account in ARNs, never a real one

LambdaHandler = Callable[[dict[str, Any], Any], Any]


class NonLoopbackHostError(ValueError):
    """The requested listen address is not a loopback address."""


class InvalidProxyResponseError(ValueError):
    """The handler returned something that is not a valid proxy integration response."""


# --------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Route:
    """One API route: the HTTP method and the resource path template, e.g. "/items/{id}"."""

    method: str
    resource: str
    pattern: re.Pattern[str]

    @classmethod
    def from_template(cls, method: str, resource: str) -> Route:
        """Compile a resource path such as "/recommendations/{user_id}" or "/files/{proxy+}"."""
        parts = []
        for segment in resource.strip("/").split("/"):
            greedy = re.fullmatch(r"\{(\w+)\+\}", segment)
            single = re.fullmatch(r"\{(\w+)\}", segment)
            if greedy:
                parts.append(f"(?P<{greedy.group(1)}>.+)")
            elif single:
                parts.append(f"(?P<{single.group(1)}>[^/]+)")
            else:
                parts.append(re.escape(segment))
        return cls(method.upper(), resource, re.compile("/" + "/".join(parts)))

    def match(self, method: str, raw_path: str) -> dict[str, str] | None:
        """Return the decoded path parameters if this route serves the request, else None."""
        if self.method not in ("ANY", method):
            return None
        found = self.pattern.fullmatch(raw_path)
        if found is None:
            return None
        return {name: unquote(value) for name, value in found.groupdict().items()}


def load_routes(template_path: Path | str = TEMPLATE_PATH) -> list[Route]:
    """Compile the routes of the template's Api events."""
    return [Route.from_template(method, path) for method, path in api_routes(template_path)]


# --------------------------------------------------------------------------- Lambda context


@dataclass
class LocalLambdaContext:
    """The attributes of the Lambda context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    aws_request_id: str
    deadline_monotonic: float
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        """Return the milliseconds left before the function's Timeout, at least 0."""
        return max(0, int((self.deadline_monotonic - time.monotonic()) * 1000))


def make_context(settings: FunctionSettings) -> LocalLambdaContext:
    """Create a fresh context for one invocation of the function described by `settings`."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return LocalLambdaContext(
        function_name=settings.logical_id,
        memory_limit_in_mb=settings.memory_mb,
        invoked_function_arn=f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{settings.logical_id}",
        aws_request_id=str(uuid.uuid4()),
        deadline_monotonic=time.monotonic() + settings.timeout_s,
        log_group_name=f"/aws/lambda/{settings.logical_id}",
    )


# --------------------------------------------------------------------------- event


@dataclass(frozen=True)
class IncomingRequest:
    """An HTTP request as received, before translation: raw target, headers in order, body."""

    method: str
    target: str
    headers: Sequence[tuple[str, str]]
    body: bytes
    source_ip: str
    server_port: int


def build_event(
    request: IncomingRequest, route: Route, path_parameters: Mapping[str, str]
) -> dict[str, Any]:
    """Translate a request into an API Gateway REST API (v1) Lambda proxy event."""
    raw_path, _, query = request.target.partition("?")
    query = query.partition("#")[0]

    headers, multi_headers = _header_maps(request)
    # parse_qsl decodes percent escapes and "+" as a space, as API Gateway REST APIs do.
    query_pairs = parse_qsl(query, keep_blank_values=True, encoding="utf-8", errors="replace")
    multi_query: dict[str, list[str]] = {}
    for name, value in query_pairs:
        multi_query.setdefault(name, []).append(value)

    body, is_base64 = _event_body(request.body)
    now = datetime.now(UTC)
    request_id = str(uuid.uuid4())
    return {
        "resource": route.resource,
        "path": raw_path,
        "httpMethod": request.method,
        "headers": headers or None,
        "multiValueHeaders": multi_headers or None,
        # API Gateway keeps the last value of a repeated name in the single-value map.
        "queryStringParameters": {name: values[-1] for name, values in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": dict(path_parameters) or None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "domainName": headers.get("Host", f"{DEFAULT_HOST}:{request.server_port}"),
            "extendedRequestId": request_id,
            "httpMethod": request.method,
            "identity": {
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "sourceIp": request.source_ip,
                "user": None,
                "userAgent": headers.get("User-Agent"),
                "userArn": None,
            },
            # Without a "/local" prefix: Powertools' APIGatewayRestResolver strips "/{stage}"
            # from the path only when requestContext.path starts with it.
            "path": raw_path,
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "resourceId": "local",
            "resourcePath": route.resource,
            "stage": STAGE,
        },
        "body": body,
        "isBase64Encoded": is_base64,
    }


def _header_maps(request: IncomingRequest) -> tuple[dict[str, str], dict[str, list[str]]]:
    multi: dict[str, list[str]] = {}
    for name, value in request.headers:
        multi.setdefault(name, []).append(value)
    # Headers that API Gateway adds in front of the integration.
    multi.setdefault("X-Forwarded-For", [request.source_ip])
    multi.setdefault("X-Forwarded-Port", [str(request.server_port)])
    multi.setdefault("X-Forwarded-Proto", ["http"])
    single = {name: values[-1] for name, values in multi.items()}
    return single, multi


def _event_body(raw: bytes) -> tuple[str | None, bool]:
    if not raw:
        return None, False
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        # NOTE: API Gateway base64-encodes only media types listed in binaryMediaTypes, and
        # the template lists none; any non-UTF-8 body is base64-encoded here instead.
        return base64.b64encode(raw).decode("ascii"), True


# --------------------------------------------------------------------------- response


@dataclass(frozen=True)
class ProxyResponse:
    """A validated Lambda proxy response, ready to write."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def parse_proxy_response(result: Any) -> ProxyResponse:
    """Validate a handler's return value as a proxy response; raise InvalidProxyResponseError."""
    if not isinstance(result, dict):
        raise InvalidProxyResponseError(
            f"handler returned {type(result).__name__}, expected a dict"
        )
    status = result.get("statusCode")
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if not isinstance(status, int) or not 100 <= status <= 599:
        raise InvalidProxyResponseError(f"statusCode {status!r} is not an HTTP status code")

    # As in API Gateway: a name present in multiValueHeaders takes its values from there only.
    multi = result.get("multiValueHeaders") or {}
    single = result.get("headers") or {}
    if not isinstance(multi, dict) or not isinstance(single, dict):
        raise InvalidProxyResponseError("headers and multiValueHeaders must be objects")
    multi_names = {name.lower() for name in multi}
    headers = [(name, str(value)) for name, values in multi.items() for value in values]
    headers += [
        (name, str(value)) for name, value in single.items() if name.lower() not in multi_names
    ]

    body = result.get("body")
    if body is None:
        payload = b""
    elif not isinstance(body, str):
        raise InvalidProxyResponseError(f"body is {type(body).__name__}, expected a string or null")
    elif result.get("isBase64Encoded"):
        try:
            payload = base64.b64decode(body, validate=True)
        except binascii.Error as error:
            raise InvalidProxyResponseError(
                f"isBase64Encoded is true but body is not base64: {error}"
            ) from error
    else:
        payload = body.encode("utf-8")
    return ProxyResponse(status, headers, payload)


# --------------------------------------------------------------------------- server


class LocalApiServer(ThreadingHTTPServer):
    """HTTP server that routes requests to a Lambda handler; see the module docstring."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: LambdaHandler,
        routes: Sequence[Route],
        settings: FunctionSettings,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _RequestHandler)
        self.lambda_handler = handler
        self.routes = list(routes)
        self.settings = settings
        self.handler_failures = 0  # handler exceptions and invalid responses (each a 502)
        self._invoke_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name with getfqdn, a DNS lookup that a
        # loopback-only server does not need.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def find_route(self, method: str, raw_path: str) -> tuple[Route, dict[str, str]] | None:
        """Return the first route serving `method raw_path` and its decoded path parameters."""
        for route in self.routes:
            parameters = route.match(method, raw_path)
            if parameters is not None:
                return route, parameters
        return None

    def invoke(self, event: dict[str, Any]) -> ProxyResponse:
        """Call the handler with `event`; log any failure and return a 502, as API Gateway does."""
        request_id = event["requestContext"]["requestId"]
        with self._invoke_lock:
            # The deadline starts when the call starts, not while the request waits its turn.
            context = make_context(self.settings)
            started = time.monotonic()
            try:
                response = parse_proxy_response(self.lambda_handler(event, context))
            except InvalidProxyResponseError as error:
                self.handler_failures += 1
                logger.error("Invalid proxy response for request %s: %s", request_id, error)
                return _internal_error()
            except Exception:  # any handler exception is a 502, as in API Gateway
                self.handler_failures += 1
                logger.exception(
                    "Handler raised for request %s (%s %s)",
                    request_id,
                    event["httpMethod"],
                    event["path"],
                )
                return _internal_error()
        elapsed_s = time.monotonic() - started
        if elapsed_s > self.settings.timeout_s:
            logger.warning(
                "Handler took %.1f s for request %s, beyond the function Timeout of %d s; "
                "Lambda would have stopped it",
                elapsed_s,
                request_id,
                self.settings.timeout_s,
            )
        return response

    def start_thread(self) -> None:
        """Serve in a daemon thread until `stop()`."""
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.1}, name="local-api", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the socket and join the serving thread."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.server_close()


def _json_response(
    status: int, message: str, extra_headers: Sequence[tuple[str, str]] = ()
) -> ProxyResponse:
    body = json.dumps({"message": message}).encode("utf-8")
    return ProxyResponse(status, [("Content-Type", "application/json"), *extra_headers], body)


def _internal_error() -> ProxyResponse:
    return _json_response(
        502, "Internal server error", [("x-amzn-ErrorType", "InternalServerErrorException")]
    )


class _RequestHandler(BaseHTTPRequestHandler):
    # Headers and body go out in separate writes; without TCP_NODELAY the body
    # waits for the client's delayed ACK, about 40 ms on a kept-alive connection.
    disable_nagle_algorithm = True
    server: LocalApiServer
    server_version = "local-api"
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        started = time.monotonic()
        raw_path = self.path.partition("?")[0]
        response = self._respond_to(raw_path)
        # Logged before the write, so a client that has its response also finds the line.
        # The query string is left out because it may carry values that must not be logged.
        logger.info(
            "%s %s %d %.1f ms",
            self.command,
            raw_path,
            response.status,
            (time.monotonic() - started) * 1000,
        )
        self._write(response)

    def _respond_to(self, raw_path: str) -> ProxyResponse:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return _json_response(
                411, "Chunked request bodies are not supported locally; send Content-Length"
            )
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            return _json_response(
                400, f"Invalid Content-Length {self.headers.get('Content-Length')!r}"
            )
        body = self.rfile.read(length) if length > 0 else b""

        found = self.server.find_route(self.command, raw_path)
        if found is None:
            return _json_response(404, "Not Found")
        route, path_parameters = found
        request = IncomingRequest(
            method=self.command,
            target=self.path,
            headers=list(self.headers.items()),
            body=body,
            source_ip=self.client_address[0],
            server_port=self.server.server_address[1],
        )
        event = build_event(request, route, path_parameters)
        response = self.server.invoke(event)
        request_id = event["requestContext"]["requestId"]
        return ProxyResponse(
            response.status, [*response.headers, ("x-amzn-RequestId", request_id)], response.body
        )

    def _write(self, response: ProxyResponse) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Send http.server's own errors (unknown method, bad request line) as JSON, not HTML."""
        self.close_connection = True
        reason = message or self.responses.get(code, ("Error",))[0]
        # A request line that failed to parse leaves no path, and a query string is never logged.
        path = getattr(self, "path", "") or ""
        logger.info(
            "%s %s %d (rejected by the HTTP server)", self.command, path.partition("?")[0], code
        )
        self._write(_json_response(code, reason))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _handle logs one line per request, with the time taken

    def log_message(self, format: str, *args: Any) -> None:
        logger.warning("%s: %s", self.address_string(), format % args)


# --------------------------------------------------------------------------- entry points


def validate_host(host: str) -> str:
    """Return the address to bind for `host`; raise NonLoopbackHostError unless it is loopback."""
    if host == "localhost":
        return DEFAULT_HOST
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise NonLoopbackHostError(
            f"host {host!r} rejected: the local API has no authentication, so it listens on "
            "loopback addresses only (127.0.0.0/8, ::1 or localhost)"
        )
    return str(address)


def default_handler() -> LambdaHandler:
    """Import src/app.py and return its lambda_handler."""
    if str(SRC_DIR) not in sys.path:
        sys.path.insert(0, str(SRC_DIR))
    app = importlib.import_module("app")
    return app.lambda_handler  # type: ignore[no-any-return]


def apply_function_environment(settings: FunctionSettings, *, override: bool = False) -> list[str]:
    """Set the function's template environment in os.environ and return the names set.

    Without `override`, a variable that is already set keeps its value, so the caller can
    point TABLE_NAME and the like elsewhere.
    """
    applied = []
    for name, value in settings.environment.items():
        if override or name not in os.environ:
            os.environ[name] = value
            applied.append(name)
    return applied


def create_server(
    port: int = DEFAULT_PORT,
    *,
    host: str = DEFAULT_HOST,
    handler: LambdaHandler | None = None,
    routes: Sequence[tuple[str, str]] | None = None,
    template_path: Path | str = TEMPLATE_PATH,
) -> LocalApiServer:
    """Bind a LocalApiServer without serving yet.

    `routes` defaults to the template's Api events and `handler` to src/app.py's
    lambda_handler, imported here so that the caller sets the environment first.
    """
    bind_host = validate_host(host)
    compiled = (
        [Route.from_template(method, path) for method, path in routes]
        if routes is not None
        else load_routes(template_path)
    )
    # The caller may have set the model table already; then the template's Ref resolves to it.
    model_table = os.environ.get("MODEL_TABLE_NAME", "").strip() or None
    settings = function_settings(template_path, model_table_name=model_table)
    return LocalApiServer((bind_host, port), handler or default_handler(), compiled, settings)


def serve_in_thread(
    port: int = 0,
    *,
    host: str = DEFAULT_HOST,
    handler: LambdaHandler | None = None,
    routes: Sequence[tuple[str, str]] | None = None,
    template_path: Path | str = TEMPLATE_PATH,
) -> tuple[LocalApiServer, str]:
    """Start the front end in a daemon thread and return (server, base URL); call server.stop()."""
    server = create_server(
        port, host=host, handler=handler, routes=routes, template_path=template_path
    )
    server.start_thread()
    bound_host, bound_port = server.server_address[:2]
    display_host = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    base_url = f"http://{display_host}:{bound_port}"
    logger.info("Local API serving %d route(s) on %s", len(server.routes), base_url)
    return server, base_url


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.local_api",
        description="Serve template.yaml's API routes on 127.0.0.1 and invoke src/app.py "
        "with API Gateway REST proxy events.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="TCP port to listen on (default: %(default)s)",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="loopback address to bind: 127.0.0.0/8, ::1 or localhost (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        validate_host(args.host)
    except NonLoopbackHostError as error:
        parser.error(str(error))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the front end in the foreground until Ctrl-C; the environment configures the handler."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    applied = apply_function_environment(function_settings())
    logger.info(
        "Set the function environment from template.yaml: %s", ", ".join(applied) or "nothing new"
    )
    try:
        server = create_server(args.port, host=args.host)
    except ImportError as error:
        logger.error("Cannot import the handler from %s: %s", SRC_DIR / "app.py", error)
        return 1
    except OSError as error:
        logger.error(
            "Cannot listen on %s:%d (%s); pass another --port", args.host, args.port, error
        )
        return 1
    logger.info("Local API on http://%s:%d", args.host, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("Interrupted; stopping")
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
