"""Build the item-similarity model from the command line, against any DynamoDB endpoint.

Usage: python -m tools.build_model [--endpoint-url URL] [--region REGION]
       [--table UserInteractions] [--model-table RecommendationModels]
       [--create-model-table] [--neighbours N] [--segments S]
       [--read-capacity RCU] [--write-concurrency C] [--max-items-per-user K]
       [--retention-hours H] [--verbose]

It runs the Lambda builder's own `model_builder.build_model`: the same Scan,
computation and writes, then flips CURRENT. The similarity exponents come from
SIMILARITY_ALPHA, SIMILARITY_BETA and USER_WEIGHT_EXPONENT as in the function.
Logs go to stderr; stdout gets one JSON line with the build summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

REPO_ROOT = Path(__file__).resolve().parent.parent
SRC_DIR = REPO_ROOT / "src"
if str(SRC_DIR) not in sys.path:
    sys.path.insert(0, str(SRC_DIR))
# The service name of template.yaml's Globals, which the src/ loggers put in every line.
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "recommendations")

from config import ConfigurationError, load_settings
from interaction_store import StoreError
from item_model import DEFAULT_NEIGHBOURS_PER_ITEM, ITEM_MODEL_EXPONENTS, similarity_config
from model_builder import (
    DEFAULT_READ_CAPACITY_PER_SECOND,
    DEFAULT_SCAN_SEGMENTS,
    DEFAULT_WRITE_CONCURRENCY,
    MODEL_TABLE_NAME,
    TABLE_NAME,
    BuilderSettings,
    build_model,
    load_builder_settings,
)
from model_builder import logger as builder_logger
from model_store import CURRENT_KEY, DEFAULT_RETENTION_HOURS
from tools.template_table import (
    DEFAULT_MODEL_TABLE_NAME,
    TemplateError,
    create_model_table,
)

logger = logging.getLogger(__name__)

DEFAULT_TABLE = "UserInteractions"
# Errors of a build that carry a message for the user, to report without a traceback.
BUILD_ERRORS: tuple[type[Exception], ...] = (ConfigurationError, StoreError, TemplateError)


def _is_loopback(endpoint_url: str) -> bool:
    host = urlsplit(endpoint_url).hostname or ""
    return host == "localhost" or host == "::1" or host.startswith("127.")


def create_client(endpoint_url: str | None, region: str | None, connections: int = 16) -> Any:
    """Create a DynamoDB client; a loopback endpoint without credentials gets dummy ones."""
    credentials: dict[str, str] = {}
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
    if (
        endpoint
        and _is_loopback(endpoint)
        and not os.environ.get("AWS_ACCESS_KEY_ID")
        and not os.environ.get("AWS_PROFILE")
    ):
        # Local servers check no signature, but botocore still needs keys to sign.
        credentials = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
    if endpoint and _is_loopback(endpoint) and not region:
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    config = Config(
        retries={"mode": "standard", "max_attempts": 8},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=connections,
    )
    return boto3.client(
        "dynamodb", endpoint_url=endpoint, region_name=region, config=config, **credentials
    )


def settings_from_args(args: argparse.Namespace) -> BuilderSettings:
    """Turn the parsed flags into builder settings; the exponents come from the environment."""
    base = load_settings({**ITEM_MODEL_EXPONENTS, **os.environ, "TABLE_NAME": args.table}).model
    settings = BuilderSettings(
        table_name=args.table,
        model_table_name=args.model_table,
        read_capacity_per_second=args.read_capacity,
        scan_segments=args.segments,
        neighbours_per_item=args.neighbours,
        max_items_per_user=args.max_items_per_user,
        retention_hours=args.retention_hours,
        write_concurrency=args.write_concurrency,
    )
    return replace(settings, model=similarity_config(args.neighbours, base))


def ensure_model(
    client: Any, table_name: str, model_table_name: str, *, rebuild: bool
) -> dict[str, Any] | None:
    """Create the model table if needed and build a model, unless one is there already.

    With `rebuild` False and a CURRENT item in the table, nothing is built and None is
    returned; otherwise the build's summary is. Settings other than the table names come
    from the builder's environment variables, as in the Lambda function.
    """
    create_model_table(client, model_table_name)
    if not rebuild:
        current = client.get_item(
            TableName=model_table_name, Key={"pk": {"S": CURRENT_KEY}}, ConsistentRead=True
        ).get("Item")
        if current is not None:
            logger.info(
                "Skipped the model build: table %s already has version %s (built %s)",
                model_table_name,
                current["version"]["S"],
                current.get("built_at", {}).get("S", "at an unknown time"),
            )
            return None
    settings = load_builder_settings(
        {**os.environ, TABLE_NAME: table_name, MODEL_TABLE_NAME: model_table_name}
    )
    return build_model(client, settings)


def _bounded_int(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.build_model",
        description="Build the item-similarity model from the interactions table and publish it.",
    )
    parser.add_argument(
        "--endpoint-url",
        help="DynamoDB endpoint, such as http://127.0.0.1:8000 (default: "
        "$AWS_ENDPOINT_URL_DYNAMODB, else AWS)",
    )
    parser.add_argument("--region", help="AWS Region (default: the usual AWS settings)")
    parser.add_argument(
        "--table", default=DEFAULT_TABLE, help="interactions table (default: %(default)s)"
    )
    parser.add_argument(
        "--model-table",
        default=DEFAULT_MODEL_TABLE_NAME,
        help="model table (default: %(default)s)",
    )
    parser.add_argument(
        "--create-model-table",
        action="store_true",
        help="create the model table from template.yaml first, if it does not exist",
    )
    parser.add_argument(
        "--neighbours",
        type=_bounded_int(1, 1000),
        default=DEFAULT_NEIGHBOURS_PER_ITEM,
        help="neighbours kept per item, N (default: %(default)s)",
    )
    parser.add_argument(
        "--segments",
        type=_bounded_int(1, 64),
        default=DEFAULT_SCAN_SEGMENTS,
        help="parallel Scan segments (default: %(default)s)",
    )
    parser.add_argument(
        "--read-capacity",
        type=_positive_float,
        default=DEFAULT_READ_CAPACITY_PER_SECOND,
        help="read capacity units per second the Scan may consume (default: %(default)s)",
    )
    parser.add_argument(
        "--write-concurrency",
        type=_bounded_int(1, 64),
        default=DEFAULT_WRITE_CONCURRENCY,
        help="BatchWriteItem requests in flight (default: %(default)s)",
    )
    parser.add_argument(
        "--max-items-per-user",
        type=_bounded_int(1, 1_000_000),
        help="use only each user's newest K items (default: all)",
    )
    parser.add_argument(
        "--retention-hours",
        type=_positive_float,
        default=DEFAULT_RETENTION_HOURS,
        help="hours until the version's items expire by TTL (default: %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="log at DEBUG level")
    return parser.parse_args(argv)


def send_builder_logs_to_stderr(level: int) -> None:
    """Send the JSON log lines of the src/ modules to stderr, at ``level``."""
    # The builder's Powertools logger writes JSON lines to stdout, which is kept for the
    # summary here. Its lines go to stderr instead, once: not again through the root logger.
    handler = builder_logger.registered_handler
    if isinstance(handler, logging.StreamHandler):
        handler.setStream(sys.stderr)
    logging.getLogger(builder_logger.service).propagate = False
    builder_logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m tools.build_model`; return the process exit code."""
    args = parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    send_builder_logs_to_stderr(level)

    try:
        settings = settings_from_args(args)
        client = create_client(
            args.endpoint_url, args.region, args.segments + args.write_concurrency + 2
        )
        if args.create_model_table:
            create_model_table(client, args.model_table)
        summary = build_model(client, settings)
    except ConfigurationError as error:
        logger.error("Invalid setting: %s", error)
        return 2
    except NoRegionError:
        logger.error("No AWS Region is set; pass --region or set AWS_REGION")
        return 1
    except (StoreError, TemplateError) as error:
        logger.error("Model build failed: %s", error)
        return 1
    except (BotoCoreError, ClientError) as error:
        logger.error(
            "DynamoDB call failed: %s; check --endpoint-url, the credentials and the Region", error
        )
        return 1
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
