"""An S3 server that stops answering: every call fails as storage_unavailable within a bound, and works again.

A frozen server (SIGSTOP) still accepts connections (the kernel completes the handshake into the listen
backlog), so each try waits one read timeout. minio's defaults (300 s, 5 retries) stalled a run for about
30 minutes per request; with the timeouts of S3Settings a request gives up after ``give_up_s``.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sohoa_dev import synth

from sohoa.kernel.errors import ReasonCode, reason_code
from sohoa.kernel.settings import Settings
from sohoa.services import runner
from sohoa.services.quarantine import failed
from sohoa.storage import StorageUnavailable
from sohoa.storage.config import S3Settings
from sohoa.storage.s3 import S3Store
from tests.fake_engine import FakeEngine, installed
from tests.s3_fixtures import Ministack

QUICK = {"connect_timeout_s": 1.0, "read_timeout_s": 1.0, "retries": 1, "backoff_s": 0.1}
SLACK_S = 3.0  # a shared 2-core machine: scheduling, the TCP stack, the SDK's own work


@contextmanager
def frozen(server: Ministack) -> Iterator[None]:
    """The server process stopped (it answers nothing) for the block, always continued after it."""
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


def _timed(call) -> tuple[StorageUnavailable, float]:
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as failure:
        call()
    return failure.value, time.monotonic() - started


def test_a_frozen_server_fails_every_call_as_unavailable_within_the_bound_then_works_again(restartable_s3):
    settings = restartable_s3.settings().model_copy(update=QUICK)
    store = S3Store("s3://hang/pre", settings)
    store.ensure_ready()
    store.put_bytes("before", b"x", create_only=True)  # the conditional-write probe is done before the freeze
    calls = {"get": lambda: store.get_bytes("before"), "list": lambda: list(store.list()),
             "put": lambda: store.put_bytes("k", b"x"), "create-only put": lambda: store.put_bytes("c", b"x", create_only=True),
             "stat": lambda: store.stat("before")}
    with frozen(restartable_s3):
        for name, call in calls.items():
            error, elapsed = _timed(call)
            assert elapsed < settings.give_up_s + SLACK_S, (name, elapsed, settings.give_up_s)
            assert elapsed >= settings.read_timeout_s * 0.9, (name, elapsed)  # it did wait for the server
            assert reason_code(error) is ReasonCode.storage_unavailable
            assert error.store == "s3://hang/pre" and "s3://hang/pre" in error.message, error.message
            assert error.message.startswith(f"cannot reach S3 endpoint 127.0.0.1:{restartable_s3.port}"), error.message
            assert "sohoa-test-secret" not in str(error) and "\n" not in str(error)
            again = pickle.loads(pickle.dumps(error))  # as Prefect keeps it in a failed task's state
            assert (again.store, again.message, reason_code(again)) == (error.store, error.message, error.code)
    assert store.get_bytes("before") == b"x"
    store.put_bytes("after", b"y", create_only=True)
    assert {i.key for i in store.list()} >= {"before", "after"}


class BlackHole:
    """A TCP server that reads every request and never answers; counts the requests by method."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        try:
            head = conn.recv(65536)
        except OSError:
            return
        if head:
            self.requests.append(head.split(b" ", 1)[0].decode())

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    try:
        yield hole
    finally:
        hole.close()


def test_a_lost_answer_is_asked_again_only_where_sending_again_is_safe(black_hole):
    """A GET is sent 1 + retries times; a create-only PUT once, since a second try of a write that did land
    would find its own object and fail with a false ObjectExists."""
    settings = S3Settings(endpoint=f"http://127.0.0.1:{black_hole.port}", access_key="k", secret_key="s",
                          **{**QUICK, "read_timeout_s": 0.5, "retries": 2})
    store = S3Store("s3://hole/p", settings)
    store._cond_supported = True  # no probe: the single PUT below is the conditional one
    _timed(lambda: store.get_bytes("k"))
    assert black_hole.requests == ["GET"] * (1 + settings.retries)
    black_hole.requests.clear()
    _timed(lambda: store.put_bytes("k", b"x", create_only=True))
    assert black_hole.requests == ["PUT"]
    black_hole.requests.clear()
    _timed(lambda: store.put_bytes("k", b"x"))  # an overwrite: sending it again gives the same object
    assert black_hole.requests == ["PUT"] * (1 + settings.retries)


@pytest.fixture(scope="module")
def dossier(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("hang") / "khai-sinh"
    return out, synth.make_dossier(out, procedure="1.001193", seed=3, fmt="png-dir")


def test_a_run_whose_archive_freezes_fails_with_storage_unavailable_naming_the_store(
        dossier, restartable_s3, tmp_path, monkeypatch):
    """The runner with the fake engine, the archive on S3: the server freezes while the pages are read, so
    the archive step meets it; the outcome the CLI prints (quarantine.failed) says storage_unavailable."""
    source, truth = dossier
    for name, value in {**restartable_s3.env, **{f"SOHOA_S3_{k.upper()}": str(v) for k, v in QUICK.items()}}.items():
        monkeypatch.setenv(name, value)
    settings = Settings(archive="s3://hang-run/archive", work=str(tmp_path / "work"))
    engine = FakeEngine.from_truth(truth)
    read = engine.read

    def freeze_then_read(page, *args):
        if page.n == 1:
            os.kill(restartable_s3.proc.pid, signal.SIGSTOP)
        return read(page, *args)

    engine.read = freeze_then_read
    started = time.monotonic()
    try:
        with installed(engine), pytest.raises(StorageUnavailable) as failure:
            runner.run_dossier(str(source), runner.RunContext(settings=settings))
    finally:
        os.kill(restartable_s3.proc.pid, signal.SIGCONT)
    elapsed = time.monotonic() - started
    outcome = failed(str(source), failure.value)
    assert outcome.reason.code == ReasonCode.storage_unavailable, outcome
    assert runner.failure_reason(failure.value)[0] == ReasonCode.storage_unavailable
    assert "s3://hang-run/archive" in outcome.reason.message and "\n" not in outcome.reason.message
    # the archive step's request and the quarantine copy's each give up within the bound
    assert elapsed < 2 * S3Settings(**QUICK).give_up_s + 30, elapsed
