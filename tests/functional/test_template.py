"""Checks on template.yaml: least privilege, the request-path contract and cfn-lint."""

from __future__ import annotations

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
    statements = policy_statements(function)
    actions = {action for statement in statements for action in statement["Action"]}
    resources = [resource for statement in statements for resource in statement["Resource"]]

    assert actions == {"dynamodb:Query"}
    assert all(statement["Effect"] == "Allow" for statement in statements)
    assert resources == [
        {"Fn::Sub": "${UserInteractionsTable.Arn}/index/UserHistoryIndex"},
        {"Fn::Sub": "${UserInteractionsTable.Arn}/index/ItemUsersIndex"},
    ]


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
