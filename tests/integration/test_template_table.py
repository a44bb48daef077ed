"""tools/template_table.py: create_table arguments, routes and function settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tools.dynalite import local_client
from tools.template_table import (
    TemplateError,
    api_routes,
    create_table,
    function_settings,
    load_template,
    table_create_kwargs,
)

# A template small enough to state every expected value by hand.
SMALL_TEMPLATE = """\
Parameters:
  TableNameParam:
    Type: String
    Default: SmallTable
  Level:
    Type: String
    Default: DEBUG
Globals:
  Function:
    MemorySize: 256
    Environment:
      Variables:
        LOG_LEVEL: !Ref Level
        FLAG: true
Resources:
  UserInteractionsTable:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Ref TableNameParam
      BillingMode: PAY_PER_REQUEST
      PointInTimeRecoverySpecification:
        PointInTimeRecoveryEnabled: true
      SSESpecification:
        SSEEnabled: true
      AttributeDefinitions:
        - {AttributeName: pk, AttributeType: S}
      KeySchema:
        - {AttributeName: pk, KeyType: HASH}
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.handler
      Timeout: 7
      Environment:
        Variables:
          TABLE: !Ref UserInteractionsTable
          ARN: !GetAtt UserInteractionsTable.Arn
      Events:
        Get:
          Type: Api
          Properties: {Path: "/things/{id}", Method: get}
        Post:
          Type: Api
          Properties: {Path: /things, Method: POST}
        Timer:
          Type: Schedule
          Properties: {Schedule: rate(1 hour)}
"""


@pytest.fixture
def small_template(tmp_path: Path) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(SMALL_TEMPLATE, encoding="utf-8")
    return path


def test_short_form_tags_become_long_form(small_template: Path) -> None:
    template = load_template(small_template)

    table = template["Resources"]["UserInteractionsTable"]["Properties"]
    variables = template["Resources"]["Fn"]["Properties"]["Environment"]["Variables"]
    assert table["TableName"] == {"Ref": "TableNameParam"}
    assert variables["ARN"] == {"Fn::GetAtt": ["UserInteractionsTable", "Arn"]}


def test_kwargs_of_small_template(small_template: Path) -> None:
    kwargs = table_create_kwargs(small_template)

    assert kwargs == {
        "TableName": "SmallTable",
        "BillingMode": "PAY_PER_REQUEST",
        "SSESpecification": {"Enabled": True},
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    }


def test_table_name_argument_wins(small_template: Path) -> None:
    assert table_create_kwargs(small_template, "Other")["TableName"] == "Other"


def test_unknown_property_rejected(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(
        SMALL_TEMPLATE.replace("      BillingMode:", "      Mystery: 1\n      BillingMode:")
    )

    with pytest.raises(TemplateError, match="Mystery"):
        table_create_kwargs(path)


def test_unresolvable_intrinsic_rejected(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(
        SMALL_TEMPLATE.replace("BillingMode: PAY_PER_REQUEST", "BillingMode: !Ref Mode")
    )

    with pytest.raises(TemplateError, match="BillingMode"):
        table_create_kwargs(path)


def test_missing_template_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="template not found"):
        table_create_kwargs(tmp_path / "absent.yaml")


def test_routes_of_small_template(small_template: Path) -> None:
    assert api_routes(small_template) == [("GET", "/things/{id}"), ("POST", "/things")]


def test_function_settings_of_small_template(small_template: Path) -> None:
    settings = function_settings(small_template, table_name="Chosen")

    assert settings.logical_id == "Fn"
    assert settings.handler == "app.handler"
    assert settings.memory_mb == 256
    assert settings.timeout_s == 7
    assert settings.environment == {"LOG_LEVEL": "DEBUG", "FLAG": "true", "TABLE": "Chosen"}


def test_real_template_table() -> None:
    kwargs = table_create_kwargs()

    assert kwargs["TableName"] == "UserInteractions"
    assert "PointInTimeRecoverySpecification" not in kwargs
    assert [index["IndexName"] for index in kwargs["LocalSecondaryIndexes"]] == ["UserHistoryIndex"]
    assert [index["IndexName"] for index in kwargs["GlobalSecondaryIndexes"]] == ["ItemUsersIndex"]


def test_real_template_routes() -> None:
    assert ("GET", "/recommendations/{user_id}") in api_routes()


def _index_names(description: dict[str, Any], key: str) -> list[str]:
    return [index["IndexName"] for index in description.get(key, [])]


def test_create_table_on_moto() -> None:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")

        name = create_table(client, "MotoTable")
        again = create_table(client, "MotoTable")

        description = client.describe_table(TableName="MotoTable")["Table"]
    assert name == "MotoTable"
    assert again == "MotoTable"
    assert description["TableStatus"] == "ACTIVE"
    assert _index_names(description, "LocalSecondaryIndexes") == ["UserHistoryIndex"]
    assert _index_names(description, "GlobalSecondaryIndexes") == ["ItemUsersIndex"]


def test_create_table_on_dynalite(dynalite_endpoint: str) -> None:
    client = local_client(dynalite_endpoint)

    create_table(client, "TemplateTableTest")
    create_table(client, "TemplateTableTest")  # an existing table is left as it is

    description = client.describe_table(TableName="TemplateTableTest")["Table"]
    assert description["TableStatus"] == "ACTIVE"
    assert [key["AttributeName"] for key in description["KeySchema"]] == ["user_id", "item_id"]
    assert _index_names(description, "LocalSecondaryIndexes") == ["UserHistoryIndex"]
    assert _index_names(description, "GlobalSecondaryIndexes") == ["ItemUsersIndex"]
    client.delete_table(TableName="TemplateTableTest")
