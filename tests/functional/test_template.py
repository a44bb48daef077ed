"""Checks on template.yaml: least privilege, the request-path contract and cfn-lint."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tools.template_table import TEMPLATE_PATH, load_template


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def function(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]["RecommendationsFunction"]["Properties"]


def policy_statements(function: dict[str, Any]) -> list[dict[str, Any]]:
    statements = []
    for policy in function.get("Policies", []):
        assert isinstance(policy, dict), f"managed or SAM policy template {policy!r} is not reviewed here"
        assert "Statement" in policy, f"unexpected policy shape {policy!r}"
        statements.extend(policy["Statement"])
    return statements


def test_function_may_only_query_indexes(function: dict[str, Any]) -> None:
    statements = {statement["Sid"]: statement for statement in policy_statements(function)}

    assert set(statements) == {"QueryInteractionIndexes", "CheckSeenItems", "ReadModel"}
    assert all(statement["Effect"] == "Allow" for statement in statements.values())
    assert statements["QueryInteractionIndexes"]["Action"] == ["dynamodb:Query"]
    assert statements["QueryInteractionIndexes"]["Resource"] == [
        {"Fn::Sub": "${UserInteractionsTable.Arn}/index/UserHistoryIndex"},
        {"Fn::Sub": "${UserInteractionsTable.Arn}/index/ItemUsersIndex"},
    ]
    assert statements["CheckSeenItems"]["Action"] == ["dynamodb:BatchGetItem"]
    assert statements["CheckSeenItems"]["Resource"] == [{"Fn::GetAtt": ["UserInteractionsTable", "Arn"]}]
    assert statements["ReadModel"]["Action"] == ["dynamodb:GetItem", "dynamodb:BatchGetItem"]
    assert statements["ReadModel"]["Resource"] == [{"Fn::GetAtt": ["RecommendationModelTable", "Arn"]}]


def test_only_builder_may_scan(template: dict[str, Any]) -> None:
    scanners = [
        name
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function" and "dynamodb:Scan" in repr(resource["Properties"].get("Policies"))
    ]

    assert scanners == ["ModelBuilderFunction"]


def test_policy_has_no_scan_or_writes(function: dict[str, Any]) -> None:
    text = repr(function.get("Policies", []))

    for forbidden in ("Scan", "PutItem", "BatchWriteItem", "DeleteItem", "UpdateItem", "dynamodb:*"):
        assert forbidden not in text


def test_function_contract(function: dict[str, Any], template: dict[str, Any]) -> None:
    runtime = function.get("Runtime") or template["Globals"]["Function"]["Runtime"]
    events = {name: event["Properties"] for name, event in function["Events"].items()}

    assert runtime.startswith("python3.")
    assert int(runtime.split(".")[1]) >= 12
    assert function["Handler"] == "app.lambda_handler"
    assert function["CodeUri"] == "src/"
    assert function["Environment"]["Variables"]["TABLE_NAME"] == {"Ref": "UserInteractionsTable"}
    assert events["GetRecommendations"]["Path"] == "/recommendations/{user_id}"
    assert events["GetRecommendations"]["Method"].upper() == "GET"


def test_table_definition(template: dict[str, Any]) -> None:
    table = template["Resources"]["UserInteractionsTable"]["Properties"]
    keys = {key["AttributeName"]: key["KeyType"] for key in table["KeySchema"]}
    indexes = {index["IndexName"]: index for index in table["GlobalSecondaryIndexes"]}

    assert keys == {"user_id": "HASH", "item_id": "RANGE"}
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert indexes["ItemUsersIndex"]["KeySchema"][0] == {"AttributeName": "item_id", "KeyType": "HASH"}
    assert indexes["ItemUsersIndex"]["Projection"]["ProjectionType"] == "KEYS_ONLY"


def test_outputs_include_api_url(template: dict[str, Any]) -> None:
    assert "RecommendationsApiUrl" in template["Outputs"]


def test_cfn_lint_passes() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), str(TEMPLATE_PATH)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def api_methods(template: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    body = template["Resources"]["RecommendationsApi"]["Properties"]["DefinitionBody"]
    return {
        (path, method): operation
        for path, operations in body["paths"].items()
        for method, operation in operations.items()
    }


def test_every_get_requires_auth(template: dict[str, Any]) -> None:
    methods = api_methods(template)
    gets = {key: operation for key, operation in methods.items() if key[1] == "get"}

    assert set(gets) == {
        ("/recommendations/{user_id}", "get"),
        ("/recommendations", "get"),
        ("/items/{item_id}/similar", "get"),
    }
    for operation in gets.values():
        assert operation["security"] == {"Fn::If": ["UseApiKey", [{"api_key": []}], [{"sigv4": []}]]}


def test_preflight_exists_only_with_cors(template: dict[str, Any]) -> None:
    methods = api_methods(template)
    options = [operation for key, operation in methods.items() if key[1] == "options"]

    assert len(options) == 3
    for operation in options:
        condition, enabled, disabled = operation["Fn::If"]
        assert condition == "HasCors"
        assert enabled["x-amazon-apigateway-integration"]["type"] == "mock"
        assert disabled == {"Ref": "AWS::NoValue"}


def test_security_parameters(template: dict[str, Any]) -> None:
    parameters = template["Parameters"]
    conditions = template["Conditions"]
    resources = template["Resources"]
    stage = resources["RecommendationsApi"]["Properties"]["MethodSettings"][0]

    assert parameters["ApiAuthMode"]["Default"] == "AWS_IAM"
    assert parameters["ApiAuthMode"]["AllowedValues"] == ["AWS_IAM", "API_KEY"]
    assert conditions["UseApiKey"] == {"Fn::Equals": [{"Ref": "ApiAuthMode"}, "API_KEY"]}
    for name in ("RecommendationsApiKey", "RecommendationsUsagePlan", "RecommendationsUsagePlanKey"):
        assert resources[name]["Condition"] == "UseApiKey"
    assert stage["ThrottlingRateLimit"] == {"Ref": "ThrottlingRateLimit"}
    assert stage["ThrottlingBurstLimit"] == {"Ref": "ThrottlingBurstLimit"}
    assert resources["RecommendationsFunction"]["Properties"]["ReservedConcurrentExecutions"] == {
        "Fn::If": ["HasReservedConcurrency", {"Ref": "ReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
    }


@pytest.mark.parametrize("auth_mode", ["AWS_IAM", "API_KEY"])
def test_sam_translation_per_auth_mode(template: dict[str, Any], auth_mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The SAM translator that cfn-lint ships turns the template into plain
    # CloudFormation, which shows what each mode deploys.
    from samtranslator.translator.transform import transform

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    document = copy.deepcopy(template)
    for resource in document["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://bucket/code.zip"

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    output = transform(document, {"ApiAuthMode": auth_mode}, NoManagedPolicies())
    types = {resource["Type"] for resource in output["Resources"].values()}
    body = output["Resources"]["RecommendationsApi"]["Properties"]["Body"]
    get = body["paths"]["/recommendations/{user_id}"]["get"]

    assert "AWS::ApiGateway::UsagePlan" in types
    assert get["x-amazon-apigateway-integration"]["type"] == "aws_proxy"
    assert get["security"]["Fn::If"][0] == "UseApiKey"
    assert "Auth" not in output["Resources"]["RecommendationsApi"]["Properties"]
