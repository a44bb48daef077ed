"""tools/dynalite.py: start, stop, persistence and errors of the dynalite subprocess."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from tools.dynalite import Dynalite, DynaliteError, DynaliteNotInstalledError, free_port

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")


def accepts_connections(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@needs_node
def test_start_lists_tables_then_stop() -> None:
    server = Dynalite(port=0)

    with server:
        tables = server.client().list_tables()["TableNames"]
        assert server.endpoint_url.startswith("http://127.0.0.1:")
        assert tables == []
        assert server.running

    assert not server.running
    assert not accepts_connections(server.port)


@needs_node
def test_data_dir_keeps_tables(tmp_path: Path) -> None:
    data_dir = tmp_path / "dynalite"
    port = free_port()

    with Dynalite(port=port, data_dir=data_dir) as server:
        server.client().create_table(
            TableName="Kept",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
    with Dynalite(port=port, data_dir=data_dir) as server:
        tables = server.client().list_tables()["TableNames"]

    assert tables == ["Kept"]


@needs_node
def test_busy_port_rejected() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]

        with pytest.raises(DynaliteError, match="already in use"):
            Dynalite(port=port).start()


def test_missing_binary_says_make_install(tmp_path: Path) -> None:
    with pytest.raises(DynaliteNotInstalledError, match="make install"):
        Dynalite(binary=tmp_path / "no-dynalite").start()


def test_missing_node_says_make_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")

    with pytest.raises(DynaliteNotInstalledError, match="make install"):
        Dynalite().start()


@needs_node
def test_exit_during_start_reports_output(tmp_path: Path) -> None:
    failing = tmp_path / "dynalite"
    failing.write_text("#!/bin/sh\necho 'storage is locked' >&2\nexit 3\n")
    failing.chmod(0o755)
    server = Dynalite(port=0, binary=failing)

    with pytest.raises(DynaliteError) as raised:
        server.start()

    assert "exited with code 3" in str(raised.value)
    assert "storage is locked" in str(raised.value)
    assert not server.running
