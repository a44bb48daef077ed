"""Inject DynamoDB faults into the handler and report what callers and logs get.

Run with ``python -m tools.fault_report [--output docs/faults.md]``. Each
scenario makes one Query call of the request (first, second or third round)
fail on a moto table built from template.yaml, then calls the handler through
an API Gateway event and through direct invocation. The report lists status,
Retry-After, whether any recommendation leaked into the error, and whether the
error log line carries the request id.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
START_MARKER = "<!-- fault_report:start -->"
END_MARKER = "<!-- fault_report:end -->"
TABLE_NAME = "UserInteractions"
REQUEST_ID = "fault-report-request"


@dataclass(frozen=True)
class Scenario:
    name: str
    make_error: Callable[[], Exception]
    expected_status: int


@dataclass(frozen=True)
class Outcome:
    scenario: str
    caller: str
    failed_round: int
    status: int
    retry_after: str | None
    leaked_recommendations: bool
    logged_with_request_id: bool
    expected_status: int

    @property
    def ok(self) -> bool:
        needs_retry_after = self.caller == "api" and self.status == 503
        retry_ok = self.retry_after == "1" if needs_retry_after else True
        return (
            self.status == self.expected_status
            and retry_ok
            and not self.leaked_recommendations
            and self.logged_with_request_id
        )


def scenarios() -> list[Scenario]:
    from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError

    def client_error(code: str) -> Callable[[], Exception]:
        return lambda: ClientError(
            {"Error": {"Code": code, "Message": f"injected {code}"}, "ResponseMetadata": {"RequestId": "DDB-1"}},
            "Query",
        )

    return [
        Scenario("ThrottlingException", client_error("ThrottlingException"), 503),
        Scenario("ProvisionedThroughputExceededException", client_error("ProvisionedThroughputExceededException"), 503),
        Scenario("RequestLimitExceeded", client_error("RequestLimitExceeded"), 503),
        Scenario("InternalServerError", client_error("InternalServerError"), 503),
        Scenario("read timeout", lambda: ReadTimeoutError(endpoint_url="http://127.0.0.1:9"), 503),
        Scenario("connect timeout", lambda: ConnectTimeoutError(endpoint_url="http://127.0.0.1:9"), 503),
        Scenario("ResourceNotFoundException (missing table)", client_error("ResourceNotFoundException"), 500),
        Scenario("AccessDeniedException", client_error("AccessDeniedException"), 500),
        Scenario("ValidationException", client_error("ValidationException"), 500),
    ]


def _load_app() -> Any:
    for name in ("config", "interaction_store", "model_store", "item_model", "service", "app"):
        sys.modules.pop(name, None)
    return importlib.import_module("app")


def _seed_table(client: Any) -> None:
    log = {"u1": ["A", "B"], "u2": ["A", "C"], "u3": ["A", "C", "D"], "u4": ["B", "D"]}
    for user_id, items in log.items():
        for offset, item_id in enumerate(items):
            client.put_item(
                TableName=TABLE_NAME,
                Item={
                    "user_id": {"S": user_id},
                    "item_id": {"S": item_id},
                    "interaction_type": {"S": "view"},
                    "timestamp": {"N": str(1_700_000_000 + offset)},
                },
            )


class _Context:
    function_name = "RecommendationsFunction"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:RecommendationsFunction"
    aws_request_id = REQUEST_ID


def _api_event() -> dict[str, Any]:
    event = json.loads((REPO_ROOT / "events" / "api-get-recommendations.json").read_text())
    event["path"] = event["requestContext"]["path"] = "/recommendations/u1"
    event["requestContext"]["requestId"] = REQUEST_ID
    event["queryStringParameters"] = event["multiValueQueryStringParameters"] = None
    return event


def run_scenario(app: Any, scenario: Scenario, caller: str, failed_round: int) -> Outcome:
    client = app._service._store._client
    real_query = client.query
    calls = {"count": 0}

    def failing_query(**kwargs: Any) -> Any:
        calls["count"] += 1
        if calls["count"] >= failed_round:
            raise scenario.make_error()
        return real_query(**kwargs)

    logs = io.StringIO()
    app.logger.logger_handler.setStream(logs)
    client.query = failing_query
    try:
        if caller == "api":
            response = app.lambda_handler(_api_event(), _Context())
            status = response["statusCode"]
            body = json.loads(response["body"])
            headers = {key: values[-1] for key, values in (response.get("multiValueHeaders") or {}).items()}
            retry_after = headers.get("Retry-After")
        else:
            body = app.lambda_handler({"user_id": "u1"}, _Context())
            status = body.get("statusCode", 200)
            retry_after = None  # Direct callers get no headers; the 503 status tells them to retry.
    finally:
        client.query = real_query

    records = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    logged = any(
        record.get("level") in ("WARNING", "ERROR") and record.get("correlation_id") == REQUEST_ID
        for record in records
    )
    return Outcome(
        scenario=scenario.name,
        caller=caller,
        failed_round=failed_round,
        status=status,
        retry_after=retry_after,
        leaked_recommendations="recommendations" in body,
        logged_with_request_id=logged,
        expected_status=scenario.expected_status,
    )


def run_all() -> list[Outcome]:
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        TABLE_NAME=TABLE_NAME,
        POWERTOOLS_SERVICE_NAME="fault-report",
    )
    os.environ.pop("AWS_ENDPOINT_URL_DYNAMODB", None)
    sys.path.insert(0, str(REPO_ROOT / "src"))

    import boto3
    from moto import mock_aws

    from tools.template_table import create_table

    outcomes = []
    with mock_aws():
        client = boto3.client("dynamodb")
        create_table(client, TABLE_NAME)
        _seed_table(client)
        app = _load_app()
        for scenario in scenarios():
            for failed_round in (1, 2, 3):
                for caller in ("api", "direct"):
                    outcomes.append(run_scenario(app, scenario, caller, failed_round))
    return outcomes


def render(outcomes: list[Outcome]) -> str:
    passed = sum(outcome.ok for outcome in outcomes)
    lines = [
        START_MARKER,
        (f"Generated by `python -m tools.fault_report` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: "
        f"{len(outcomes)} injections, {passed} as documented."),
        "",
        "| fault | caller | failed Query | status | Retry-After | list in error | log line with request id |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for outcome in outcomes:
        lines.append(
            f"| {outcome.scenario} | {outcome.caller} | call {outcome.failed_round} | {outcome.status} "
            f"| {outcome.retry_after or '-'} | {'yes' if outcome.leaked_recommendations else 'no'} "
            f"| {'yes' if outcome.logged_with_request_id else 'no'} |"
        )
    lines.append(END_MARKER)
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if START_MARKER in text and END_MARKER in text:
        before = text[: text.index(START_MARKER)]
        after = text[text.index(END_MARKER) + len(END_MARKER) :]
        text = before + section + after
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="Markdown page whose marked section is replaced.")
    args = parser.parse_args(argv)

    outcomes = run_all()
    section = render(outcomes)
    print(section)
    if args.output:
        write_section(args.output, section)
    failed = [outcome for outcome in outcomes if not outcome.ok]
    print(json.dumps({"injections": len(outcomes), "as_documented": len(outcomes) - len(failed)}))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
