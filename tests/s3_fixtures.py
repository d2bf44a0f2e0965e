"""Pytest plugin: a real S3 emulator (ministack) for the whole test session.

Load with ``-p tests.s3_fixtures`` (or ``pytest_plugins = ["tests.s3_fixtures"]``).
S3 tests never skip: CI must exercise the S3 backend, so a missing emulator
is a hard failure that says how to install it (``scripts/s3-server --install``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sohoa.storage.config import S3Settings

REPO = Path(__file__).resolve().parent.parent
HEALTH_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class S3Server:
    """Connection details of the session's emulator."""

    endpoint: str  # "127.0.0.1:PORT" (what minio wants)
    access_key: str
    secret_key: str
    region: str
    url: str  # "http://127.0.0.1:PORT"
    log_path: Path


def _ministack_binary() -> Path:
    env = os.environ.get("SOHOA_MINISTACK")
    candidate = Path(env) if env else REPO / ".venv-s3" / "bin" / "ministack"
    if not (candidate.is_file() and os.access(candidate, os.X_OK)):
        source = "SOHOA_MINISTACK" if env else "the default location"
        pytest.fail(
            f"S3 emulator not found at {candidate} ({source}); run `scripts/s3-server --install` "
            "or set SOHOA_MINISTACK to a ministack binary",
            pytrace=False,
        )
    return candidate


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_ministack/health", timeout=1) as resp:
            body = json.loads(resp.read())
    except (OSError, ValueError):
        return False
    return body.get("services", {}).get("s3") == "available"


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Start ministack on a free port with a temp data dir; stop it at session end."""
    binary = _ministack_binary()
    base = tmp_path_factory.mktemp("ministack")
    data_dir = base / "data"
    data_dir.mkdir()
    log_path = base / "ministack.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "GATEWAY_PORT": str(port),
        "BIND_HOST": "127.0.0.1",
        "SERVICES": "s3",
        "S3_PERSIST": "1",
        "S3_DATA_DIR": str(data_dir),
        "LOG_LEVEL": "WARNING",
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(binary)], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=base
        )
    try:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(
                    f"ministack exited with code {proc.returncode} before becoming healthy; "
                    f"log {log_path}:\n{_log_tail(log_path)}",
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"ministack not healthy on {url} after {HEALTH_TIMEOUT_S:.0f}s; "
                    f"log {log_path}:\n{_log_tail(log_path)}",
                    pytrace=False,
                )
            time.sleep(0.1)
        yield S3Server(
            endpoint=f"127.0.0.1:{port}",
            access_key="sohoa-test",
            secret_key="sohoa-test-secret",
            region="us-east-1",
            url=url,
            log_path=log_path,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(autouse=True)
def _fresh_stores() -> Iterator[None]:
    """Each test opens its own stores: open_store shares S3 stores per process, and a test may patch
    one or restart the server behind its URL."""
    from sohoa.storage import forget_stores

    forget_stores()
    yield
    forget_stores()


@pytest.fixture
def s3_settings(s3_server: S3Server) -> S3Settings:
    """Settings for the session server, independent of the caller's environment."""
    return S3Settings(
        endpoint=s3_server.url,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        region=s3_server.region,
        create_bucket=True,
    )


@pytest.fixture
def s3_store_url() -> str:
    """A fresh bucket (and a nested prefix) per test, so tests never see each other's objects."""
    return f"s3://t-{uuid.uuid4().hex[:8]}/pre/fix"


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Export SOHOA_S3_* so subprocesses (CLI tests) reach the session server."""
    monkeypatch.setenv("SOHOA_S3_ENDPOINT", s3_server.url)
    monkeypatch.setenv("SOHOA_S3_ACCESS_KEY", s3_server.access_key)
    monkeypatch.setenv("SOHOA_S3_SECRET_KEY", s3_server.secret_key)
    monkeypatch.setenv("SOHOA_S3_REGION", s3_server.region)
    monkeypatch.delenv("SOHOA_S3_SECURE", raising=False)
    return s3_server


class Ministack:
    """A ministack process of one test's own (own port, own data dir) that the test can kill and start
    again: with S3_PERSIST=1 every object is on disk before it is acknowledged, so it survives a SIGKILL."""

    def __init__(self, binary: Path, base: Path) -> None:
        self.binary = binary
        self.base = base
        self.data_dir = base / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = base / "ministack.log"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        """SOHOA_S3_* for a subprocess (a CLI) that talks to this server."""
        return {"SOHOA_S3_ENDPOINT": self.url, "SOHOA_S3_ACCESS_KEY": "sohoa-test",
                "SOHOA_S3_SECRET_KEY": "sohoa-test-secret", "SOHOA_S3_REGION": "us-east-1"}

    def settings(self) -> S3Settings:
        return S3Settings(endpoint=self.url, access_key="sohoa-test", secret_key="sohoa-test-secret",
                          region="us-east-1", create_bucket=True)

    def start(self) -> Ministack:
        """Start (or start again, on the same port and data) and wait until S3 answers."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = {**os.environ, "GATEWAY_PORT": str(self.port), "BIND_HOST": "127.0.0.1", "SERVICES": "s3",
               "S3_PERSIST": "1", "S3_DATA_DIR": str(self.data_dir), "LOG_LEVEL": "WARNING"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([str(self.binary)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.base)
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while not _healthy(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"ministack on {self.url} did not become healthy; log {self.log_path}:\n"
                            f"{_log_tail(self.log_path)}", pytrace=False)
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """SIGKILL: the server is gone at once, as in a crash or a pulled cable (no graceful shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def restartable_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ministack]:
    """A started ministack of this test's own, to kill and restart (``kill()``, ``start()``); stopped at the end."""
    server = Ministack(_ministack_binary(), tmp_path_factory.mktemp("ministack-own"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


def ready_store(request: pytest.FixtureRequest, tmp_path: Path, kind: str):
    """A prepared store of ``kind`` (``local``: a folder of the test's; ``s3``: a fresh bucket on the session
    server, SOHOA_S3_* exported), and its URL: for fixtures parametrized over both backends."""
    from sohoa.storage import open_store

    if kind == "s3":
        request.getfixturevalue("s3_env")
        url = request.getfixturevalue("s3_store_url")
    else:
        url = str(tmp_path / "archive")
    store = open_store(url)
    store.ensure_ready()
    return store, url
