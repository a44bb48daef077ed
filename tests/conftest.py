"""Fixtures shared by every test.

- `dummy_aws_env` (autouse): dummy credentials and Region, no profile, no endpoint override.
- `dynalite_endpoint` (session): URL of an in-memory dynalite on a free 127.0.0.1 port.
- `local_table` (module): a table built from template.yaml on that dynalite, unique per module.
- `load_app` (function): sets environment variables and imports src/app.py afresh.
- `serve_api` (function): starts the local API front end in a thread, stopped after the test.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tools.dynalite import Dynalite, DynaliteNotInstalledError, local_client
from tools.local_api import LambdaHandler, LocalApiServer, serve_in_thread
from tools.template_table import create_table, function_settings

SRC_DIR = Path(__file__).resolve().parent.parent / "src"


@pytest.fixture(autouse=True)
def dummy_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give every test dummy credentials in us-east-1, so none can reach a real AWS account.

    Profiles, session tokens, endpoint overrides and the user's ~/.aws files are hidden too;
    a test that needs an endpoint sets AWS_ENDPOINT_URL_DYNAMODB itself.
    """
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_DYNAMODB",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def dynalite_endpoint() -> Iterator[str]:
    """Start an in-memory dynalite for the whole session and yield its endpoint URL.

    Without Node.js or node_modules the tests that use it are skipped, except under CI=true,
    where they fail: CI installs both, so a skip there would hide a broken install.
    """
    server = Dynalite(port=0)
    try:
        server.start()
    except DynaliteNotInstalledError as error:
        if os.environ.get("CI"):
            pytest.fail(f"{error} (CI installs dynalite, so its tests must run)")
        pytest.skip(str(error))
    try:
        yield server.endpoint_url
    finally:
        server.stop()


@dataclass(frozen=True)
class LocalTable:
    """A table created from template.yaml on the session's dynalite."""

    name: str
    endpoint_url: str
    client: Any = field(repr=False)  # boto3 DynamoDB client with dummy credentials

    def handler_env(self) -> dict[str, str]:
        """Return the function's environment from template.yaml, pointed at this table."""
        environment = function_settings(table_name=self.name).environment
        return {**environment, "AWS_ENDPOINT_URL_DYNAMODB": self.endpoint_url}


@pytest.fixture(scope="module")
def local_table(request: pytest.FixtureRequest, dynalite_endpoint: str) -> Iterator[LocalTable]:
    """Create a table named after the test module (plus a random suffix); delete it afterwards."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    # Table names allow letters, digits, "_", "-" and "." only, 3 to 255 characters.
    name = f"{re.sub(r'[^A-Za-z0-9_.-]', '-', module)[:200]}-{uuid.uuid4().hex[:8]}"
    client = local_client(dynalite_endpoint)
    create_table(client, name)
    try:
        yield LocalTable(name=name, endpoint_url=dynalite_endpoint, client=client)
    finally:
        client.delete_table(TableName=name)


def _forget_src_modules() -> None:
    # Every module loaded from src/ (app, config, interaction_store, ...) is dropped, so the
    # next import runs its module-level configuration again.
    for name, module in list(sys.modules.items()):
        module_file = getattr(module, "__file__", None)
        if module_file and Path(module_file).resolve().parent == SRC_DIR:
            del sys.modules[name]


@pytest.fixture
def load_app(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[Mapping[str, str | None]], ModuleType]]:
    """Return `load(env) -> app module`: set env (None unsets), then import src/app.py afresh.

    The handler reads its configuration once per import, so each call drops every src/
    module from sys.modules and imports app again, which imports config, interaction_store
    and the rest anew. A test that imported one of them at the top of its file keeps the
    old object, so use the attributes of the returned module instead (app.config and so on).
    The modules are dropped again after the test.
    """

    def load(env: Mapping[str, str | None]) -> ModuleType:
        for variable, value in env.items():
            if value is None:
                monkeypatch.delenv(variable, raising=False)
            else:
                monkeypatch.setenv(variable, value)
        _forget_src_modules()
        return importlib.import_module("app")

    yield load
    _forget_src_modules()


@pytest.fixture
def serve_api() -> Iterator[Callable[..., tuple[LocalApiServer, str]]]:
    """Return `serve(handler, routes=None) -> (server, base_url)`; servers stop after the test.

    `routes` is a list of (METHOD, path template) and defaults to template.yaml's Api events.
    """
    servers: list[LocalApiServer] = []

    def serve(
        handler: LambdaHandler, routes: Sequence[tuple[str, str]] | None = None
    ) -> tuple[LocalApiServer, str]:
        server, base_url = serve_in_thread(0, handler=handler, routes=routes)
        servers.append(server)
        return server, base_url

    yield serve
    for server in servers:
        server.stop()
