"""tools/demo.py: ratings file choice, MovieLens download (faked), load-once marker, whole run.

No test reaches the network: the download function is replaced by one that copies files made
in tmp_path, and the whole-run tests use dynalite on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tools import demo
from tools.dynalite import free_port, local_client
from tools.template_table import create_table

REPO_ROOT = Path(__file__).resolve().parents[2]

README_TEXT = """\
Summary
=======

A small test copy.

Usage License
=============

Use it for research only.

* Keep this file beside the data.

Citation
========

Cite the test.
"""

RATINGS_CSV = """\
userId,movieId,rating,timestamp
1,10,4.0,964982703
1,20,5.0,964981247
2,10,3.0,964982224
2,30,4.5,964983815
3,20,2.0,964982931
3,30,4.0,964982400
"""
RATINGS_ROWS = 6


# --------------------------------------------------------------------------- download (faked)


@pytest.fixture
def published(tmp_path: Path) -> dict[str, Path]:
    """Make the zip and .md5 files that GroupLens publishes, in a folder standing for the site."""
    site = tmp_path / "site"
    site.mkdir()
    archive = site / "ml-latest-small.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("ml-latest-small/ratings.csv", RATINGS_CSV)
        bundle.writestr("ml-latest-small/README.txt", README_TEXT)
    digest = hashlib.md5(archive.read_bytes()).hexdigest()  # GroupLens publishes MD5 sums
    checksum = site / "ml-latest-small.zip.md5"
    checksum.write_text(f"MD5 (ml-latest-small.zip) = {digest}\n")
    return {demo.MOVIELENS_URL: archive, demo.MOVIELENS_MD5_URL: checksum}


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch, published: dict[str, Path]) -> list[str]:
    """Replace demo.download by a copy from `published`; return the list of URLs fetched."""
    fetched: list[str] = []

    def fake_download(url: str, destination: Path) -> None:
        fetched.append(url)
        destination.write_bytes(published[url].read_bytes())

    monkeypatch.setattr(demo, "download", fake_download)
    return fetched


def test_fetch_unzips_beside_readme(
    tmp_path: Path, downloads: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    datasets = tmp_path / "datasets"

    ratings = demo.fetch_movielens(datasets)

    assert ratings == datasets / "ml-latest-small" / "ratings.csv"
    assert ratings.read_text() == RATINGS_CSV
    assert (ratings.parent / "README.txt").read_text() == README_TEXT
    assert sorted(downloads) == sorted([demo.MOVIELENS_URL, demo.MOVIELENS_MD5_URL])
    printed = capsys.readouterr().out
    assert "Usage License" in printed
    assert "Use it for research only." in printed
    assert "Cite the test." not in printed


def test_fetch_reuses_earlier_download(tmp_path: Path, downloads: list[str]) -> None:
    datasets = tmp_path / "datasets"
    demo.fetch_movielens(datasets)
    downloads.clear()

    ratings = demo.fetch_movielens(datasets)

    assert ratings.is_file()
    assert downloads == []


def test_fetch_rejects_checksum_mismatch(
    tmp_path: Path, downloads: list[str], published: dict[str, Path]
) -> None:
    published[demo.MOVIELENS_MD5_URL].write_text(
        "0123456789abcdef0123456789abcdef  ml-latest-small.zip\n"
    )
    datasets = tmp_path / "datasets"

    with pytest.raises(demo.ChecksumMismatchError, match="0123456789abcdef0123456789abcdef"):
        demo.fetch_movielens(datasets)

    assert not (datasets / "ml-latest-small.zip").exists()
    assert not (datasets / "ml-latest-small").exists()


def test_fetch_accepts_md5sum_format(
    tmp_path: Path, downloads: list[str], published: dict[str, Path]
) -> None:
    digest = hashlib.md5(published[demo.MOVIELENS_URL].read_bytes()).hexdigest()
    published[demo.MOVIELENS_MD5_URL].write_text(f"{digest}  ml-latest-small.zip\n")

    ratings = demo.fetch_movielens(tmp_path / "datasets")

    assert ratings.is_file()


def test_checksum_file_without_sum(tmp_path: Path) -> None:
    archive = tmp_path / "ml-latest-small.zip"
    archive.write_bytes(b"zip")

    with pytest.raises(demo.DemoError, match="no MD5 sum"):
        demo.verify_md5(archive, "<html>Not Found</html>")


def test_licence_section_without_heading() -> None:
    assert "no Usage License section" in demo.licence_section("Summary\n=======\n")


# --------------------------------------------------------------------------- ratings choice


@pytest.fixture
def ratings_file(tmp_path: Path) -> Path:
    path = tmp_path / "ratings.csv"
    path.write_text(RATINGS_CSV)
    return path


def test_ratings_option_first(
    monkeypatch: pytest.MonkeyPatch, ratings_file: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.csv"
    other.write_text(RATINGS_CSV)
    monkeypatch.setenv("RATINGS", str(other))

    assert demo.resolve_ratings(str(ratings_file), tmp_path) == ratings_file


def test_ratings_environment_second(
    monkeypatch: pytest.MonkeyPatch, ratings_file: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("RATINGS", str(ratings_file))

    assert demo.resolve_ratings(None, tmp_path) == ratings_file


def test_ratings_shared_copy_third(
    monkeypatch: pytest.MonkeyPatch, ratings_file: Path, tmp_path: Path
) -> None:
    monkeypatch.delenv("RATINGS", raising=False)
    monkeypatch.setattr(demo, "SHARED_RATINGS", ratings_file)

    assert demo.resolve_ratings(None, tmp_path) == ratings_file


def test_ratings_download_last(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, downloads: list[str]
) -> None:
    monkeypatch.delenv("RATINGS", raising=False)
    monkeypatch.setattr(demo, "SHARED_RATINGS", tmp_path / "absent" / "ratings.csv")

    ratings = demo.resolve_ratings(None, tmp_path / "datasets")

    assert ratings == tmp_path / "datasets" / "ml-latest-small" / "ratings.csv"
    assert demo.MOVIELENS_URL in downloads


def test_missing_ratings_file_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"

    with pytest.raises(demo.DemoError, match="nope.csv"):
        demo.resolve_ratings(str(missing), tmp_path)


# --------------------------------------------------------------------------- load once


@pytest.fixture
def fresh_table(dynalite_endpoint: str) -> Iterator[tuple[Any, str]]:
    client = local_client(dynalite_endpoint)
    name = f"demo-load-{uuid.uuid4().hex[:8]}"
    create_table(client, name)
    yield client, name
    client.delete_table(TableName=name)


def item_count(client: Any, table_name: str) -> int:
    return client.scan(TableName=table_name, Select="COUNT")["Count"]


def test_load_once_loads_then_skips(
    fresh_table: tuple[Any, str], ratings_file: Path, tmp_path: Path, dynalite_endpoint: str
) -> None:
    client, table_name = fresh_table
    marker = tmp_path / "state" / "demo-load.json"

    first = demo.load_once(client, ratings_file, table_name, dynalite_endpoint, marker)
    second = demo.load_once(client, ratings_file, table_name, dynalite_endpoint, marker)

    assert first is True
    assert second is False
    assert item_count(client, table_name) == RATINGS_ROWS
    record = json.loads(marker.read_text())
    assert record["sha256"] == hashlib.sha256(ratings_file.read_bytes()).hexdigest()
    assert record["size"] == ratings_file.stat().st_size
    assert record["path"] == str(ratings_file.resolve())
    assert record["table_name"] == table_name
    assert record["rows_written"] == RATINGS_ROWS


def test_load_once_reloads_empty_table(
    fresh_table: tuple[Any, str], ratings_file: Path, tmp_path: Path, dynalite_endpoint: str
) -> None:
    client, table_name = fresh_table
    marker = tmp_path / "demo-load.json"
    demo.load_once(client, ratings_file, table_name, dynalite_endpoint, marker)
    for item in client.scan(TableName=table_name, ProjectionExpression="user_id, item_id")["Items"]:
        client.delete_item(TableName=table_name, Key=item)

    reloaded = demo.load_once(client, ratings_file, table_name, dynalite_endpoint, marker)

    assert reloaded is True
    assert item_count(client, table_name) == RATINGS_ROWS


def test_load_once_reloads_changed_file(
    fresh_table: tuple[Any, str], ratings_file: Path, tmp_path: Path, dynalite_endpoint: str
) -> None:
    client, table_name = fresh_table
    marker = tmp_path / "demo-load.json"
    demo.load_once(client, ratings_file, table_name, dynalite_endpoint, marker)
    ratings_file.write_text(RATINGS_CSV + "4,40,1.0,964982000\n")

    reloaded = demo.load_once(client, ratings_file, table_name, dynalite_endpoint, marker)

    assert reloaded is True
    assert item_count(client, table_name) == RATINGS_ROWS + 1


def test_loopback_endpoints() -> None:
    assert demo.is_loopback_endpoint("http://127.0.0.1:8000")
    assert demo.is_loopback_endpoint("http://localhost:8000")
    assert demo.is_loopback_endpoint("http://[::1]:8000")
    assert not demo.is_loopback_endpoint("https://dynamodb.us-east-1.amazonaws.com")


# --------------------------------------------------------------------------- whole run


class DemoProcess:
    """`python -m tools.demo` as a subprocess, with its stdout lines in a queue."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tools.demo", *args],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for_ready(self, timeout_s: float = 120) -> str:
        """Return the URL of the "Ready: curl URL" line; fail with the demo's log otherwise."""
        try:
            while True:
                line = self.lines.get(timeout=timeout_s)
                if line.startswith("Ready: curl "):
                    return line.removeprefix("Ready: curl ")
        except queue.Empty:
            pytest.fail(f"no Ready line within {timeout_s} s; demo log:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=30)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()


def http_get(url: str) -> tuple[int, Any]:
    address = urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.request("GET", address.path + (f"?{address.query}" if address.query else ""))
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def accepts_connections(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def demo_args(ratings_file: Path, tmp_path: Path) -> list[str]:
    return [
        "--ratings",
        str(ratings_file),
        "--port",
        str(free_port()),
        "--state-dir",
        str(tmp_path / "state"),
        "--table-name",
        f"demo-run-{uuid.uuid4().hex[:8]}",
    ]


@pytest.mark.http
def test_demo_own_dynalite_sigterm(demo_args: list[str], tmp_path: Path) -> None:
    dynamodb_port = free_port()
    process = DemoProcess(
        [*demo_args, "--dynamodb-port", str(dynamodb_port)], dict(os.environ), tmp_path / "demo.log"
    )
    try:
        url = process.wait_for_ready()
        status, body = http_get(url)
        exit_code = process.stop(signal.SIGTERM)
    finally:
        process.kill()

    assert url.endswith("/recommendations/1")
    assert status == 200
    assert body["user_id"] == "1"
    assert exit_code == 0
    assert (tmp_path / "state" / "dynalite").is_dir()
    assert (tmp_path / "state" / "demo-load.json").is_file()
    assert not accepts_connections(dynamodb_port)
    assert "Traceback" not in process.log()


@pytest.mark.http
def test_demo_given_endpoint_sigint(
    demo_args: list[str], tmp_path: Path, dynalite_endpoint: str
) -> None:
    env = {**os.environ, "AWS_ENDPOINT_URL_DYNAMODB": dynalite_endpoint}
    process = DemoProcess(demo_args, env, tmp_path / "demo.log")
    try:
        url = process.wait_for_ready()
        status, _ = http_get(url)
        exit_code = process.stop(signal.SIGINT)
    finally:
        process.kill()

    assert status == 200
    assert exit_code == 0
    assert f"Using the DynamoDB endpoint {dynalite_endpoint}" in process.log()
    assert "Starting dynalite" not in process.log()
    assert not (tmp_path / "state" / "dynalite").exists()
