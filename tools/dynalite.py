"""Start and stop dynalite, a DynamoDB-compatible server from npm, on 127.0.0.1.

    with Dynalite(port=0) as server:             # in memory, on a free port
        client = server.client()

    with Dynalite(port=8000, data_dir=Path(".local/dynalite")) as server:  # kept on disk
        ...

dynalite is installed by `make install` (npm ci) under node_modules/. The server always binds
127.0.0.1, so nothing on the network can reach it.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DYNALITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "dynalite"
HOST = "127.0.0.1"
# No table of this name is created. A DescribeTable call for it shows that the server responds.
READINESS_PROBE_TABLE = "dynalite-readiness-probe"

# Credentials and Region for talking to a local server, which checks neither.
LOCAL_CREDENTIALS = {
    "aws_access_key_id": "local",
    "aws_secret_access_key": "local",
    "region_name": "us-east-1",
}


class DynaliteError(RuntimeError):
    """dynalite failed to start, or did not respond in time."""


class DynaliteNotInstalledError(DynaliteError):
    """Node.js or the dynalite package is missing."""


def free_port(host: str = HOST) -> int:
    """Return a TCP port on `host` that nothing listens on at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def port_in_use(port: int, host: str = HOST) -> bool:
    """Return whether binding `host:port` fails, that is whether another process listens on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Servers (node, http.server) set SO_REUSEADDR, which lets them bind over connections
        # left in TIME_WAIT by an earlier run. The probe sets it too, so that it fails only
        # where they would.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def local_client(
    endpoint_url: str,
    *,
    connect_timeout_s: float = 2,
    read_timeout_s: float = 10,
    max_attempts: int = 3,
) -> Any:
    """Create a DynamoDB client for a local endpoint with dummy credentials and short timeouts."""
    config = Config(
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"max_attempts": max_attempts},
    )
    return boto3.client("dynamodb", endpoint_url=endpoint_url, config=config, **LOCAL_CREDENTIALS)


class Dynalite:
    """A dynalite subprocess, started by `start()` or `with`, stopped by `stop()` or leaving `with`.

    `port=0` or None picks a free port. `data_dir` keeps the tables in a LevelDB folder
    there (created if missing), otherwise they live in memory and vanish on stop.
    `startup_timeout_s` bounds the wait for the first DescribeTable response.
    """

    def __init__(
        self,
        port: int | None = 0,
        data_dir: Path | str | None = None,
        *,
        startup_timeout_s: float = 20.0,
        binary: Path | str = DYNALITE_BIN,
    ) -> None:
        self.requested_port = port or 0
        self.port = self.requested_port
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.startup_timeout_s = startup_timeout_s
        self.binary = Path(binary)
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        """HTTP endpoint of the running server, such as http://127.0.0.1:8000."""
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the subprocess has been started and has not exited."""
        return self._process is not None and self._process.poll() is None

    def client(self) -> Any:
        """Create a DynamoDB client for this server."""
        return local_client(self.endpoint_url)

    def start(self) -> Self:
        """Start dynalite and wait until it responds to DescribeTable; raise DynaliteError otherwise."""
        if self.running:
            return self
        self._check_installed()
        # With a fixed port a busy port is the user's to fix. With a free port the pick can
        # race with another process, so retry a few times with a new pick.
        attempts = 1 if self.requested_port else 3
        for attempt in range(1, attempts + 1):
            if not self.requested_port:
                self.port = free_port()
            elif port_in_use(self.requested_port):
                raise DynaliteError(
                    f"port {HOST}:{self.requested_port} is already in use; stop the process "
                    "listening there, choose another port, or point AWS_ENDPOINT_URL_DYNAMODB at "
                    "that server"
                )
            try:
                self._launch()
                return self
            except DynaliteError:
                self.stop()
                if attempt == attempts:
                    raise
                logger.warning(
                    "dynalite failed to start on port %d; retrying on another port", self.port
                )
            except BaseException:
                # KeyboardInterrupt and the like: __exit__ does not run when __enter__ raises,
                # so the half-started process is stopped here.
                self.stop()
                raise
        return self

    def stop(self) -> None:
        """Stop the subprocess (SIGTERM, then SIGKILL after 5 s). Safe to call more than once."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    logger.warning(
                        "dynalite (pid %d) ignored SIGTERM for 5 s; killing it", process.pid
                    )
                    process.kill()
                    process.wait(timeout=5)
            logger.info("dynalite stopped (pid %d, exit code %s)", process.pid, process.returncode)
        if self._output is not None:
            self._output.close()
            self._output = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------------- internals

    def _check_installed(self) -> None:
        if shutil.which("node") is None:
            raise DynaliteNotInstalledError(
                "Node.js (node) is not on PATH, and dynalite needs it; install Node.js 20 or "
                "newer, then run `make install`"
            )
        if not self.binary.exists():
            raise DynaliteNotInstalledError(
                f"dynalite not found at {self.binary}; run `make install`"
            )

    def _launch(self) -> None:
        command = [str(self.binary), "--host", HOST, "--port", str(self.port)]
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            command += ["--path", str(self.data_dir)]
        # Output goes to a temporary file rather than a pipe, because no thread reads a pipe
        # while the server runs and a full pipe would block the server.
        self._output = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        started = time.monotonic()
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._output, stderr=subprocess.STDOUT
        )
        storage = str(self.data_dir) if self.data_dir is not None else "memory"
        logger.info(
            "Starting dynalite on %s (pid %d, data in %s)",
            self.endpoint_url,
            self._process.pid,
            storage,
        )
        self._wait_until_ready(started)
        logger.info(
            "dynalite is ready on %s (%.2f s)", self.endpoint_url, time.monotonic() - started
        )

    def _wait_until_ready(self, started: float) -> None:
        client = local_client(
            self.endpoint_url, connect_timeout_s=1, read_timeout_s=2, max_attempts=1
        )
        deadline = started + self.startup_timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                # LevelDB lets one process open a folder; dynalite 4.0.0 then fails with
                # "Database is not open" rather than naming the lock.
                hint = (
                    f" If another dynalite uses {self.data_dir}, stop it or choose another folder."
                    if self.data_dir is not None
                    else ""
                )
                raise DynaliteError(
                    f"dynalite exited with code {code} while starting on "
                    f"{self.endpoint_url}.{hint} Its output:\n{self._read_output()}"
                )
            try:
                # dynalite 4.0.0 serves ListTables by reading every key of its data folder,
                # which takes minutes with millions of items. DescribeTable of a missing table
                # costs one key lookup.
                client.describe_table(TableName=READINESS_PROBE_TABLE)
                return
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                    return
                last_error = error
                time.sleep(0.1)
            except BotoCoreError as error:
                last_error = error
                time.sleep(0.1)
        raise DynaliteError(
            f"dynalite did not respond to DescribeTable on {self.endpoint_url} within "
            f"{self.startup_timeout_s:.0f} s (last error: {last_error}). "
            f"Its output:\n{self._read_output()}"
        )

    def _read_output(self) -> str:
        if self._output is None:
            return ""
        self._output.seek(0)
        return self._output.read().decode("utf-8", errors="replace").strip()
