"""A private Prefect API server for one ``sohoa run``, started before Prefect is imported.

Why: without ``PREFECT_API_URL``, Prefect's client imports its whole server application into
the calling process only to start that same server in a subprocess (about 3 s of CPU,
measured), and the command waits for it. Started first, the server boots on the other core
while the CLI imports Prefect and the pipeline, and the CLI never imports the server. The
command is Prefect's own for its temporary server (uvicorn on ``create_app``, UI off); the
services that only feed a UI nobody sees in a one-shot run are turned off: each is one more
SQLite writer, and their writes made flow-run creation fail with "database is locked" (HTTP
503) and the client sleep 2 s before retrying.

The server runs in a session of its own, so a Ctrl-C at the terminal (SIGINT to the foreground
process group) reaches the CLI only: Prefect in the CLI still reaches it to mark the run Crashed, and
the CLI stops it last. It is never orphaned: its standard input is a pipe from the CLI, and a thread of the
server (``python -m sohoa.orchestration.embedded``) ends it when that pipe closes, which the
kernel does when the CLI exits in any way, SIGKILL included.

This module must not import Prefect.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

SERVICES_OFF = ("EVENT_PERSISTER", "TASK_RUN_RECORDER", "TRIGGERS")  # TRIGGERS also stops actions
PORT_IN_USE = 3  # uvicorn's exit code when it cannot bind
LOG_ENV = "SOHOA_EMBEDDED_SERVER_LOG"  # the server's log file, removed by the server when the CLI could not
SHUTDOWN_S = 5.0  # the server's own graceful shutdown after the CLI is gone, before it exits regardless


def configured_api_url() -> str | None:
    """The API URL from the environment or the active Prefect profile, read without importing Prefect."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
    return profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL") or None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedServer:
    """Start now, ``wait()`` when the API is needed, ``stop()`` at the end (also at exit)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.process: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None
        self._at_exit = False

    def start(self) -> EmbeddedServer:
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        for service in SERVICES_OFF:
            env.setdefault(f"PREFECT_SERVER_SERVICES_{service}_ENABLED", "false")
        handle, name = tempfile.mkstemp(prefix="prefect-server-", suffix=".log")  # a file: a pipe could fill and block it
        self.log = Path(name)
        env[LOG_ENV] = name
        with os.fdopen(handle, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
                 "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
                env=env, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if not self._at_exit:
            atexit.register(self.stop)
            self._at_exit = True
        os.environ["PREFECT_API_URL"] = self.api_url  # read by Prefect when it is imported, later
        return self

    def wait(self, timeout: float) -> None:
        """Until the API answers; RuntimeError with the server's last words if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                if self.process is not None and self.process.returncode == PORT_IN_USE:  # lost a race for the port
                    self.stop()
                    self.port = _free_port()
                    self.api_url = f"http://127.0.0.1:{self.port}/api"
                    self.start()
                    continue
                words = self._last_words()
                self.stop()
                raise RuntimeError(f"the embedded Prefect server exited: {words}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the embedded Prefect server did not start within {timeout:.0f} s")

    def _last_words(self) -> str:
        try:
            text = self.log.read_text(errors="replace").strip() if self.log else ""
        except OSError:
            text = ""
        code = self.process.returncode if self.process else None
        return text.splitlines()[-1] if text else f"exit code {code}"

    def stop(self, timeout: float = 10.0) -> None:
        """Close the pipe the server watches and terminate it; killed if still there after ``timeout``."""
        process, self.process = self.process, None
        if process is not None:
            if process.stdin:
                process.stdin.close()
            stop_process(process, timeout)
        if self.log is not None:
            self.log.unlink(missing_ok=True)
            self.log = None


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate, then kill what is still there after ``timeout`` (Prefect 3.9's worker does not
    exit on SIGTERM/SIGINT while idle)."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def serve(uvicorn_args: list[str]) -> None:
    """The server process: uvicorn's command, and a watch on the pipe from the CLI."""
    threading.Thread(target=_exit_with_parent, name="sohoa-parent-watch", daemon=True).start()
    from uvicorn.main import main as uvicorn_main

    uvicorn_main.main(args=uvicorn_args, prog_name="uvicorn")


def _exit_with_parent() -> None:
    """At end of file on stdin (every copy of the CLI's end is closed: it stopped us, or it died), shut down
    as SIGTERM does (uvicorn's graceful shutdown), and exit regardless after SHUTDOWN_S."""
    while sys.stdin.buffer.read(1 << 16):
        pass
    if os.environ.get(LOG_ENV):
        Path(os.environ[LOG_ENV]).unlink(missing_ok=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(SHUTDOWN_S)
    os._exit(1)


if __name__ == "__main__":
    serve(sys.argv[1:])
