"""Read template.yaml and turn its table, routes and function settings into local equivalents.

template.yaml is the single source of truth for the DynamoDB tables. The local demo, the loader
and the tests all create their tables through `create_table` (interactions) and
`create_model_table` (item-similarity model) here, so a change to the key schema or an index
reaches every local table at once.

The YAML parser accepts the CloudFormation short-form tags (!Ref, !Sub, !GetAtt ...) and turns
each into its long JSON form (`{"Ref": ...}`, `{"Fn::Sub": ...}`), which this module resolves
where it can: a `Ref` to a template parameter gives the parameter's default, a `Ref` to the
table resource gives the table name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from botocore.exceptions import ClientError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = REPO_ROOT / "template.yaml"

TABLE_RESOURCE = "UserInteractionsTable"
TABLE_NAME_PARAMETER = "InteractionsTableName"
# The model table has no TableName in the template (CloudFormation names it on
# deploy), so local servers use this name unless the caller passes another.
MODEL_TABLE_RESOURCE = "RecommendationModelTable"
DEFAULT_MODEL_TABLE_NAME = "RecommendationModels"

# Table properties that CloudFormation and DynamoDB CreateTable spell the same way.
_PASS_THROUGH_PROPERTIES = (
    "AttributeDefinitions",
    "KeySchema",
    "BillingMode",
    "ProvisionedThroughput",
    "OnDemandThroughput",
    "TableClass",
    "DeletionProtectionEnabled",
    "Tags",
)
# Index keys that CreateTable takes; CloudFormation-only keys such as
# ContributorInsightsSpecification are left out.
_INDEX_KEYS = (
    "IndexName",
    "KeySchema",
    "Projection",
    "ProvisionedThroughput",
    "OnDemandThroughput",
)
# Table properties that have no CreateTable parameter. Point-in-time recovery is a separate
# UpdateContinuousBackups call on AWS, and local servers do not implement it.
_DROPPED_PROPERTIES = frozenset(
    {
        "PointInTimeRecoverySpecification",
        "ContributorInsightsSpecification",
        "TimeToLiveSpecification",
        "KinesisStreamSpecification",
        "ImportSourceSpecification",
        "ResourcePolicy",
        "WarmThroughput",
    }
)


# Error codes of a server that lacks an operation. dynalite 4.0.0 returns
# UnknownOperationException for UpdateTimeToLive.
_UNSUPPORTED_OPERATION_CODES = frozenset({"UnknownOperationException"})


class TemplateError(ValueError):
    """template.yaml lacks something this module needs, or uses a construct it cannot resolve."""


class TableNotActiveError(RuntimeError):
    """A table did not become ACTIVE within the wait timeout."""


# --------------------------------------------------------------------------- YAML loading


class CloudFormationLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation short-form tags as their long JSON form."""


def _construct_intrinsic(
    loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node
) -> dict[str, Any]:
    # "!Ref X" is {"Ref": "X"}; every other tag is "Fn::<Name>". "!GetAtt A.B" is the
    # scalar form of {"Fn::GetAtt": ["A", "B"]}.
    key = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {key: value}


CloudFormationLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template(template_path: Path | str = TEMPLATE_PATH) -> dict[str, Any]:
    """Parse a CloudFormation/SAM template, keeping intrinsic functions as long-form dicts."""
    path = Path(template_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise TemplateError(f"template not found: {path}; pass template_path=...") from error
    document = yaml.load(text, Loader=CloudFormationLoader)  # a SafeLoader subclass
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise TemplateError(f"{path} has no Resources mapping; is it a CloudFormation template?")
    return document


def _parameter_default(template: Mapping[str, Any], name: str) -> Any:
    parameter = template.get("Parameters", {}).get(name)
    if not isinstance(parameter, dict) or "Default" not in parameter:
        raise TemplateError(f"template parameter {name!r} is missing or has no Default")
    return parameter["Default"]


def _resource(template: Mapping[str, Any], logical_id: str, resource_type: str) -> dict[str, Any]:
    resource = template["Resources"].get(logical_id)
    if not isinstance(resource, dict) or resource.get("Type") != resource_type:
        raise TemplateError(f"template has no {resource_type} resource named {logical_id!r}")
    return resource


def _reject_intrinsics(value: Any, where: str) -> None:
    """Raise TemplateError if `value` still contains an unresolved intrinsic function."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref" or key.startswith("Fn::"):
                raise TemplateError(
                    f"{where} uses {key} ({item!r}), which cannot be resolved locally; "
                    "write a literal value in template.yaml or extend tools/template_table.py"
                )
            _reject_intrinsics(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _reject_intrinsics(item, f"{where}[{index}]")


# --------------------------------------------------------------------------- table


def table_create_kwargs(
    template_path: Path | str = TEMPLATE_PATH, table_name: str | None = None
) -> dict[str, Any]:
    """Build the DynamoDB `create_table` keyword arguments for the template's interactions table.

    The name is `table_name` if given, else the default of the InteractionsTableName
    parameter. SSESpecification is mapped to the CreateTable form (SSEEnabled becomes
    Enabled). Properties that CreateTable does not take, such as
    PointInTimeRecoverySpecification, are dropped with a DEBUG log line.
    """
    template = load_template(template_path)
    properties = _resource(template, TABLE_RESOURCE, "AWS::DynamoDB::Table").get("Properties", {})
    name = table_name or _template_table_name(template, properties)
    return _create_kwargs(TABLE_RESOURCE, properties, name)


def model_table_create_kwargs(
    template_path: Path | str = TEMPLATE_PATH, table_name: str | None = None
) -> dict[str, Any]:
    """Build the `create_table` keyword arguments for the template's RecommendationModelTable.

    The name is `table_name` if given, else the resource's TableName if it has a
    literal one, else DEFAULT_MODEL_TABLE_NAME. The mapping is the one of
    `table_create_kwargs`; TimeToLiveSpecification is dropped here and applied by
    `create_model_table` with a separate UpdateTimeToLive call.
    """
    template = load_template(template_path)
    properties = _resource(template, MODEL_TABLE_RESOURCE, "AWS::DynamoDB::Table").get(
        "Properties", {}
    )
    name = table_name or properties.get("TableName") or DEFAULT_MODEL_TABLE_NAME
    return _create_kwargs(MODEL_TABLE_RESOURCE, properties, name)


def model_table_ttl(template_path: Path | str = TEMPLATE_PATH) -> dict[str, Any] | None:
    """Return the model table's TimeToLiveSpecification from the template, None if it has none."""
    template = load_template(template_path)
    properties = _resource(template, MODEL_TABLE_RESOURCE, "AWS::DynamoDB::Table").get(
        "Properties", {}
    )
    specification = properties.get("TimeToLiveSpecification")
    if specification is None:
        return None
    _reject_intrinsics(specification, f"{MODEL_TABLE_RESOURCE}.TimeToLiveSpecification")
    return {
        "AttributeName": str(specification["AttributeName"]),
        "Enabled": bool(specification.get("Enabled", False)),
    }


def _create_kwargs(logical_id: str, properties: Mapping[str, Any], name: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"TableName": name}
    for key, value in properties.items():
        if key == "TableName":
            continue
        if key in _PASS_THROUGH_PROPERTIES:
            kwargs[key] = value
        elif key in ("LocalSecondaryIndexes", "GlobalSecondaryIndexes"):
            kwargs[key] = [{k: v for k, v in index.items() if k in _INDEX_KEYS} for index in value]
        elif key == "SSESpecification":
            kwargs[key] = _sse_specification(value)
        elif key == "StreamSpecification":
            kwargs[key] = {"StreamEnabled": True, "StreamViewType": value["StreamViewType"]}
        elif key in _DROPPED_PROPERTIES:
            logger.debug("Dropped table property %s: CreateTable has no such parameter", key)
        else:
            raise TemplateError(
                f"{logical_id} property {key!r} has no known CreateTable mapping; "
                "add it to tools/template_table.py"
            )

    _reject_intrinsics(kwargs, logical_id)
    return kwargs


def _template_table_name(template: Mapping[str, Any], properties: Mapping[str, Any]) -> str:
    name = properties.get("TableName")
    if isinstance(name, dict) and set(name) == {"Ref"}:
        name = _parameter_default(template, name["Ref"])
    if not isinstance(name, str) or not name:
        raise TemplateError(
            f"cannot resolve {TABLE_RESOURCE}.TableName ({name!r}); pass table_name=... instead"
        )
    return name


def _sse_specification(value: Mapping[str, Any]) -> dict[str, Any]:
    specification: dict[str, Any] = {"Enabled": bool(value.get("SSEEnabled", False))}
    if "SSEType" in value:
        specification["SSEType"] = value["SSEType"]
    if "KMSMasterKeyId" in value:
        specification["KMSMasterKeyId"] = value["KMSMasterKeyId"]
    return specification


def create_table(
    client: Any,
    table_name: str | None = None,
    wait: bool = True,
    *,
    template_path: Path | str = TEMPLATE_PATH,
    timeout_s: float = 120.0,
) -> str:
    """Create the interactions table from template.yaml and return its name.

    An existing table of that name is left as it is, whatever its schema. With `wait`, poll
    DescribeTable until the table and its global secondary indexes are ACTIVE, and raise
    TableNotActiveError after `timeout_s` seconds.
    """
    kwargs = table_create_kwargs(template_path, table_name)
    return _create(client, kwargs, wait, timeout_s)


def create_model_table(
    client: Any,
    table_name: str | None = None,
    wait: bool = True,
    *,
    template_path: Path | str = TEMPLATE_PATH,
    timeout_s: float = 120.0,
) -> str:
    """Create the model table from template.yaml's RecommendationModelTable; return its name.

    The default name is DEFAULT_MODEL_TABLE_NAME. An existing table is left as it is.
    When the template enables TTL and `wait` is set, an UpdateTimeToLive call follows once
    the table is ACTIVE. A server without that operation, such as dynalite 4.0.0, is
    skipped with a DEBUG log line, so its expired items simply stay. Without `wait`, call
    `enable_time_to_live` yourself once the table is ACTIVE.
    """
    kwargs = model_table_create_kwargs(template_path, table_name)
    name = _create(client, kwargs, wait, timeout_s)
    ttl = model_table_ttl(template_path)
    if ttl is not None and ttl["Enabled"]:
        if wait:
            enable_time_to_live(client, name, ttl["AttributeName"])
        else:
            logger.info("TTL of table %s not enabled yet: the table may still be CREATING", name)
    return name


def enable_time_to_live(client: Any, table_name: str, attribute_name: str) -> bool:
    """Turn TTL on for `attribute_name` unless it is on already; return whether TTL is on.

    Returns False, with a DEBUG log line, when the server does not implement the TTL calls.
    """
    try:
        description = client.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]
        if description.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
            if description.get("AttributeName") != attribute_name:
                logger.warning(
                    "Table %s already has TTL on attribute %s, not %s; left as it is",
                    table_name,
                    description.get("AttributeName"),
                    attribute_name,
                )
            return True
        client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"AttributeName": attribute_name, "Enabled": True},
        )
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in _UNSUPPORTED_OPERATION_CODES:
            logger.debug("Skipped TTL on table %s: the server does not support it (%s)", table_name, code)
            return False
        raise
    logger.info("Enabled TTL on table %s (attribute %s)", table_name, attribute_name)
    return True


def _create(client: Any, kwargs: dict[str, Any], wait: bool, timeout_s: float) -> str:
    name: str = kwargs["TableName"]
    started = time.monotonic()
    try:
        client.create_table(**kwargs)
        logger.info("Creating table %s", name)
    except client.exceptions.ResourceInUseException:
        logger.info("Table %s already exists; left as it is", name)

    if wait:
        _wait_until_active(client, name, timeout_s)
        logger.info("Table %s is ACTIVE (%.2f s)", name, time.monotonic() - started)
    return name


def _wait_until_active(client: Any, table_name: str, timeout_s: float) -> None:
    # A short poll of our own: boto3's table_exists waiter sleeps 20 s between attempts,
    # which is far too slow for a local server that creates a table in well under a second.
    deadline = time.monotonic() + timeout_s
    while True:
        table = client.describe_table(TableName=table_name)["Table"]
        statuses = [table["TableStatus"]]
        statuses += [index["IndexStatus"] for index in table.get("GlobalSecondaryIndexes", [])]
        if all(status == "ACTIVE" for status in statuses):
            return
        if time.monotonic() >= deadline:
            raise TableNotActiveError(
                f"table {table_name} is not ACTIVE after {timeout_s:.0f} s (statuses: {statuses})"
            )
        time.sleep(0.1)


# --------------------------------------------------------------------------- function and API


@dataclass(frozen=True)
class FunctionSettings:
    """Settings of the template's Lambda function that a local run reproduces."""

    logical_id: str
    handler: str
    memory_mb: int
    timeout_s: int
    environment: dict[str, str] = field(default_factory=dict)


def api_routes(template_path: Path | str = TEMPLATE_PATH) -> list[tuple[str, str]]:
    """Return (METHOD, path template) for every `Api` event of every serverless function.

    The method is upper-cased, and "ANY" stays "ANY" for the caller to expand.
    """
    template = load_template(template_path)
    routes: list[tuple[str, str]] = []
    for _, resource in _functions(template):
        for event in (resource.get("Properties", {}).get("Events") or {}).values():
            if event.get("Type") != "Api":
                continue
            event_properties = event.get("Properties", {})
            routes.append((str(event_properties["Method"]).upper(), str(event_properties["Path"])))
    return routes


def function_settings(
    template_path: Path | str = TEMPLATE_PATH,
    table_name: str | None = None,
    *,
    model_table_name: str | None = None,
) -> FunctionSettings:
    """Read the function that serves the Api events: handler, memory, timeout and environment.

    Values come from the function's Properties, falling back to Globals.Function. Environment
    values that `Ref` a parameter get its default, and those that `Ref` the table get
    `table_name` (default: the template's table name), and those that `Ref` the model table
    get `model_table_name` when given. Any other intrinsic is skipped with a warning, because
    only a deployed stack can resolve it.
    """
    template = load_template(template_path)
    functions = [item for item in _functions(template) if _has_api_event(item[1])]
    if len(functions) != 1:
        raise TemplateError(f"expected one function with Api events, found {len(functions)}")
    logical_id, resource = functions[0]
    properties = resource.get("Properties", {})
    defaults = template.get("Globals", {}).get("Function", {})

    table_properties = _resource(template, TABLE_RESOURCE, "AWS::DynamoDB::Table")["Properties"]
    resolved_table_name = table_name or _template_table_name(template, table_properties)
    raw_environment = {
        **defaults.get("Environment", {}).get("Variables", {}),
        **properties.get("Environment", {}).get("Variables", {}),
    }
    environment: dict[str, str] = {}
    for variable, value in raw_environment.items():
        resolved = _resolve_environment_value(
            template, value, resolved_table_name, model_table_name
        )
        if resolved is None:
            logger.warning(
                "Skipped environment variable %s: cannot resolve %r locally", variable, value
            )
            continue
        environment[variable] = resolved

    return FunctionSettings(
        logical_id=logical_id,
        handler=str(properties.get("Handler", defaults.get("Handler", ""))),
        memory_mb=int(properties.get("MemorySize", defaults.get("MemorySize", 128))),
        timeout_s=int(properties.get("Timeout", defaults.get("Timeout", 3))),
        environment=environment,
    )


def _functions(template: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (logical_id, resource)
        for logical_id, resource in template["Resources"].items()
        if isinstance(resource, dict) and resource.get("Type") == "AWS::Serverless::Function"
    ]


def _has_api_event(resource: Mapping[str, Any]) -> bool:
    events = resource.get("Properties", {}).get("Events") or {}
    return any(event.get("Type") == "Api" for event in events.values())


def _resolve_environment_value(
    template: Mapping[str, Any], value: Any, table_name: str, model_table_name: str | None = None
) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"  # CloudFormation's rendering of a YAML boolean
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, dict) and set(value) == {"Ref"}:
        target = value["Ref"]
        if target == TABLE_RESOURCE:
            return table_name
        if target == MODEL_TABLE_RESOURCE and model_table_name is not None:
            return model_table_name
        if target in template.get("Parameters", {}):
            return str(_parameter_default(template, target))
    return None
