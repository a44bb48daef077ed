"""Run the whole service locally on real ratings: `make demo` or `python -m tools.demo`.

Steps: start dynalite on 127.0.0.1 with its data under .local/dynalite/ (unless
AWS_ENDPOINT_URL_DYNAMODB already names a server), create the table from template.yaml and
load the ratings file once. Then create the model table and build the item-similarity model,
unless the data is unchanged and a model exists. Last, serve the API on http://127.0.0.1:3000
until Ctrl-C or SIGTERM.

The ratings file is `--ratings`, else the RATINGS environment variable, else the
ml-latest-small copy in ../shared/datasets/ when present, else ml-latest-small downloaded
from GroupLens into .local/datasets/ and checked against its published MD5 sum.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from tools.build_model import BUILD_ERRORS, ensure_model
from tools.dynalite import Dynalite, DynaliteError, port_in_use
from tools.loader import LoaderError, load_file
from tools.local_api import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    apply_function_environment,
    serve_in_thread,
)
from tools.template_table import (
    DEFAULT_MODEL_TABLE_NAME,
    TemplateError,
    create_table,
    function_settings,
    table_create_kwargs,
)

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
# Default --state-dir (git-ignored), with dynalite's LevelDB files, downloads and the marker.
LOCAL_DIR = REPO_ROOT / ".local"
DYNALITE_DIR_NAME = "dynalite"
DATASETS_DIR_NAME = "datasets"
LOAD_MARKER_NAME = "demo-load.json"
SHARED_RATINGS = REPO_ROOT.parent / "shared" / "datasets" / "ml-latest-small" / "ratings.csv"
DEFAULT_DYNAMODB_PORT = 8000

MOVIELENS_URL = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
MOVIELENS_MD5_URL = MOVIELENS_URL + ".md5"
MOVIELENS_DIR_NAME = "ml-latest-small"  # top-level folder inside the zip
DOWNLOAD_TIMEOUT_S = 60


class DemoError(RuntimeError):
    """A demo step failed; the message names the step and what to do."""


class ChecksumMismatchError(DemoError):
    """A downloaded file does not match its published checksum."""


class _Shutdown(BaseException):
    """Raised in the main thread by the SIGINT/SIGTERM handler to unwind every step."""


# --------------------------------------------------------------------------- ratings file


def resolve_ratings(
    cli_value: str | None, datasets_dir: Path = LOCAL_DIR / DATASETS_DIR_NAME
) -> Path:
    """Return the ratings file to load: --ratings, RATINGS, the shared copy, or a download."""
    chosen = cli_value or os.environ.get("RATINGS")
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise DemoError(f"ratings file {path} not found; check --ratings or RATINGS")
        return path
    if SHARED_RATINGS.is_file():
        logger.info(
            "Using %s (MovieLens; its licence is in README.txt beside it)", SHARED_RATINGS.resolve()
        )
        return SHARED_RATINGS
    return fetch_movielens(datasets_dir)


def download(url: str, destination: Path) -> None:
    """Download `url` to `destination` through a .part file, so a cut leaves no partial file."""
    partial = destination.with_name(destination.name + ".part")
    started = time.monotonic()
    try:
        with (
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
            partial.open("wb") as output,
        ):
            shutil.copyfileobj(response, output)
    except (urllib.error.URLError, TimeoutError) as error:
        partial.unlink(missing_ok=True)
        raise DemoError(
            f"download of {url} failed ({error}); download it by hand and pass the ratings "
            "file with --ratings"
        ) from error
    partial.replace(destination)
    logger.info(
        "Downloaded %s (%d bytes, %.1f s)",
        url,
        destination.stat().st_size,
        time.monotonic() - started,
    )


def fetch_movielens(datasets_dir: Path = LOCAL_DIR / DATASETS_DIR_NAME) -> Path:
    """Download, verify and unzip ml-latest-small into `datasets_dir`; return its ratings.csv.

    A previous extraction is reused. The zip is checked against the MD5 sum that GroupLens
    publishes next to it, and README.txt stays beside the data because it holds the licence,
    whose Usage License section is printed.
    """
    data_dir = datasets_dir / MOVIELENS_DIR_NAME
    ratings = data_dir / "ratings.csv"
    readme = data_dir / "README.txt"
    if ratings.is_file() and readme.is_file():
        logger.info("Using %s, downloaded earlier", ratings)
        return ratings

    datasets_dir.mkdir(parents=True, exist_ok=True)
    archive = datasets_dir / "ml-latest-small.zip"
    checksum_file = datasets_dir / "ml-latest-small.zip.md5"
    download(MOVIELENS_MD5_URL, checksum_file)
    download(MOVIELENS_URL, archive)
    verify_md5(archive, checksum_file.read_text(encoding="utf-8", errors="replace"))

    with zipfile.ZipFile(archive) as bundle:
        # extractall drops absolute paths and ".." components, so members stay in datasets_dir.
        bundle.extractall(datasets_dir)
    if not ratings.is_file() or not readme.is_file():
        raise DemoError(
            f"{archive} does not contain {MOVIELENS_DIR_NAME}/ratings.csv and README.txt; "
            f"delete {datasets_dir} and retry"
        )
    print(licence_section(readme.read_text(encoding="utf-8")), flush=True)
    return ratings


def verify_md5(path: Path, checksum_text: str) -> None:
    """Raise ChecksumMismatchError unless `path` has the MD5 sum found in `checksum_text`."""
    found = re.search(r"\b[0-9a-fA-F]{32}\b", checksum_text)
    if found is None:
        raise DemoError(
            f"no MD5 sum found in the checksum file for {path.name}: {checksum_text[:80]!r}"
        )
    expected = found.group(0).lower()
    actual = file_digest(path, "md5")
    if actual != expected:
        path.unlink()
        raise ChecksumMismatchError(
            f"{path.name} has MD5 {actual}, but the published sum is {expected}; the file was "
            "deleted, run the demo again to download it anew"
        )
    logger.info("Checked %s against its published MD5 sum", path.name)


def licence_section(readme_text: str) -> str:
    """Return the "Usage License" section of a MovieLens README, heading included."""
    lines = readme_text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Usage License"), None)
    if start is None:
        return "README.txt has no Usage License section; read the whole file before using the data."
    end = len(lines)
    # The next heading is a title line underlined with "=".
    for i in range(start + 2, len(lines) - 1):
        if lines[i].strip() and set(lines[i + 1].strip()) == {"="}:
            end = i
            break
    return "\n".join(lines[start:end]).strip()


def file_digest(path: Path, algorithm: str) -> str:
    """Return the hex digest of a file's contents."""
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, algorithm).hexdigest()


# --------------------------------------------------------------------------- load once


def file_fingerprint(path: Path) -> dict[str, Any]:
    """Identify a file's contents: absolute path, size in bytes and SHA-256."""
    return {
        "path": str(path.resolve()),
        "size": path.stat().st_size,
        "sha256": file_digest(path, "sha256"),
    }


def table_has_items(client: Any, table_name: str) -> bool:
    """Return whether the table contains at least one item."""
    return client.scan(TableName=table_name, Limit=1, Select="COUNT")["Count"] > 0


def load_once(
    client: Any,
    ratings: Path,
    table_name: str,
    endpoint_url: str,
    marker_path: Path = LOCAL_DIR / LOAD_MARKER_NAME,
) -> bool:
    """Load `ratings` into the table unless the marker shows this exact file is there already.

    The marker records the file's fingerprint, the table and the endpoint, and is written only
    after a complete load. Return whether a load ran.
    """
    expected = {**file_fingerprint(ratings), "table_name": table_name, "endpoint_url": endpoint_url}
    marker = _read_marker(marker_path)
    has_items = table_has_items(client, table_name)
    if marker is not None and all(marker.get(key) == value for key, value in expected.items()):
        if has_items:
            logger.info(
                "Skipped the load: %s (%s rows written on %s) is already in table %s",
                ratings,
                marker.get("rows_written"),
                marker.get("loaded_at"),
                table_name,
            )
            return False
        logger.info("The load marker matches but table %s is empty; loading again", table_name)
    elif has_items:
        logger.warning(
            "Table %s already contains items from another file; the new rows are added to them "
            "(run `make clean` to start from an empty table)",
            table_name,
        )

    started = time.monotonic()
    report = load_file(ratings, table_name, client=client)
    logger.info(
        "Loaded %s: %d rows read, %d written, %d rejected (%.1f s)",
        ratings,
        report.rows_read,
        report.rows_written,
        report.rows_rejected,
        time.monotonic() - started,
    )
    marker_path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        **expected,
        "rows_written": report.rows_written,
        "loaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    temporary = marker_path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    temporary.replace(marker_path)
    return True


def _read_marker(marker_path: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        logger.warning("Ignored the unreadable load marker %s (%s)", marker_path, error)
        return None
    return marker if isinstance(marker, dict) else None


# --------------------------------------------------------------------------- AWS settings


def is_loopback_endpoint(endpoint_url: str) -> bool:
    """Return whether an endpoint URL points at this machine (127.0.0.0/8, ::1 or localhost)."""
    host = urlsplit(endpoint_url).hostname or ""
    return host == "localhost" or host == "::1" or host.startswith("127.")


def use_local_credentials_if_unset() -> None:
    """Set dummy credentials and a Region when none are set; local servers check neither."""
    if not os.environ.get("AWS_ACCESS_KEY_ID") and not os.environ.get("AWS_PROFILE"):
        os.environ["AWS_ACCESS_KEY_ID"] = "local"
        os.environ["AWS_SECRET_ACCESS_KEY"] = "local"
        logger.info("Set dummy AWS credentials for the local DynamoDB server")
    if not os.environ.get("AWS_REGION") and not os.environ.get("AWS_DEFAULT_REGION"):
        os.environ["AWS_REGION"] = "us-east-1"
        os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
        logger.info("Set AWS_REGION=us-east-1 for the local DynamoDB server")


@contextmanager
def dynamodb_endpoint(port: int, data_dir: Path) -> Iterator[str]:
    """Yield the DynamoDB endpoint: AWS_ENDPOINT_URL_DYNAMODB if set, else a new dynalite's."""
    configured = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
    if configured:
        logger.info("Using the DynamoDB endpoint %s from AWS_ENDPOINT_URL_DYNAMODB", configured)
        if is_loopback_endpoint(configured):
            use_local_credentials_if_unset()
        yield configured
        return

    with Dynalite(port=port, data_dir=data_dir) as server:
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = server.endpoint_url
        use_local_credentials_if_unset()
        yield server.endpoint_url


# --------------------------------------------------------------------------- main


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.demo",
        description="Start dynalite, load ratings once and serve the API on 127.0.0.1.",
    )
    parser.add_argument(
        "--ratings",
        help="ratings file to load, MovieLens CSV or u.data (default: $RATINGS, then the shared "
        "ml-latest-small copy, then a download of ml-latest-small)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="TCP port of the API on 127.0.0.1 (default: %(default)s)",
    )
    parser.add_argument(
        "--dynamodb-port",
        type=int,
        default=DEFAULT_DYNAMODB_PORT,
        help="TCP port of dynalite on 127.0.0.1, unused when AWS_ENDPOINT_URL_DYNAMODB is set "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--table-name",
        help="table to create and load (default: the InteractionsTableName default in "
        "template.yaml)",
    )
    parser.add_argument(
        "--model-table-name",
        default=DEFAULT_MODEL_TABLE_NAME,
        help="table of the item-similarity model to create and build (default: %(default)s)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=LOCAL_DIR,
        help="folder for dynalite's data, downloads and the load marker (default: .local/ in "
        "the repository)",
    )
    return parser.parse_args(argv)


def _install_signal_handlers() -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        # A second signal during the shutdown is logged, not raised, so cleanup can finish.
        for handled in (signal.SIGINT, signal.SIGTERM):
            signal.signal(
                handled,
                lambda number, _: logger.info("Already stopping (%s)", signal.Signals(number).name),
            )
        logger.info("Received %s; stopping", signal.Signals(signum).name)
        raise _Shutdown

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def _sample_user(client: Any, table_name: str) -> str:
    """Return "1" (a MovieLens user) if that user has interactions, else any user in the table."""
    user_one = client.query(
        TableName=table_name,
        KeyConditionExpression="user_id = :user_id",
        ExpressionAttributeValues={":user_id": {"S": "1"}},
        Limit=1,
        Select="COUNT",
    )
    if user_one["Count"] > 0:
        return "1"
    items = client.scan(TableName=table_name, Limit=1, ProjectionExpression="user_id")["Items"]
    return items[0]["user_id"]["S"] if items else "1"


def run(args: argparse.Namespace) -> None:
    """Run the demo steps, then serve until _Shutdown is raised by a signal."""
    if port_in_use(args.port, DEFAULT_HOST):
        raise DemoError(f"port {DEFAULT_HOST}:{args.port} is already in use; pass another --port")
    table_name = args.table_name or table_create_kwargs()["TableName"]

    started = time.monotonic()
    ratings = resolve_ratings(args.ratings, args.state_dir / DATASETS_DIR_NAME)
    logger.info("Step 1/5: ratings file %s (%.1f s)", ratings, time.monotonic() - started)

    with dynamodb_endpoint(args.dynamodb_port, args.state_dir / DYNALITE_DIR_NAME) as endpoint_url:
        client = boto3.client("dynamodb", endpoint_url=endpoint_url)

        step_started = time.monotonic()
        create_table(client, table_name)
        logger.info(
            "Step 2/5: table %s on %s (%.1f s)",
            table_name,
            endpoint_url,
            time.monotonic() - step_started,
        )

        step_started = time.monotonic()
        loaded = load_once(
            client, ratings, table_name, endpoint_url, args.state_dir / LOAD_MARKER_NAME
        )
        logger.info("Step 3/5: data ready (%.1f s)", time.monotonic() - step_started)

        step_started = time.monotonic()
        # A new load means new data, so the model is rebuilt; otherwise an existing
        # model is kept. Building ml-latest-small took about 30 s on a 2-vCPU machine.
        summary = ensure_model(client, table_name, args.model_table_name, rebuild=loaded)
        logger.info(
            "Step 4/5: model in table %s, %s (%.1f s)",
            args.model_table_name,
            f"version {summary['version']}" if summary else "unchanged",
            time.monotonic() - step_started,
        )

        step_started = time.monotonic()
        os.environ["TABLE_NAME"] = table_name
        os.environ["MODEL_TABLE_NAME"] = args.model_table_name
        apply_function_environment(
            function_settings(table_name=table_name, model_table_name=args.model_table_name)
        )
        try:
            server, base_url = serve_in_thread(args.port)
        except ImportError as error:
            raise DemoError(
                f"cannot import the handler src/app.py ({error}); fix it and rerun"
            ) from error
        logger.info("Step 5/5: API on %s (%.1f s)", base_url, time.monotonic() - step_started)
        try:
            _serve_until_stopped(base_url, _sample_user(client, table_name))
        finally:
            server.stop()
            logger.info("HTTP server stopped")


def _serve_until_stopped(base_url: str, sample_user: str) -> None:
    print(f"Ready: curl {base_url}/recommendations/{quote(sample_user, safe='')}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    while True:
        time.sleep(3600)  # the signal handler interrupts this with _Shutdown


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m tools.demo`; return the process exit code."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("botocore").setLevel(logging.WARNING)  # one INFO line per client otherwise
    _install_signal_handlers()
    try:
        run(args)
    except _Shutdown:
        logger.info("Demo stopped")
        return 0
    except (DemoError, DynaliteError, TemplateError, LoaderError, *BUILD_ERRORS) as error:
        logger.error("%s", error)
        return 1
    except (BotoCoreError, ClientError) as error:
        logger.error(
            "DynamoDB call failed: %s; check AWS_ENDPOINT_URL_DYNAMODB, the credentials and "
            "the Region",
            error,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
