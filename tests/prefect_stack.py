"""A real Prefect server with the project's deployments and a ``sohoa`` worker, for the tests that
need the deployment path (suspend and resume, worker-side runs)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from sohoa.orchestration.embedded import stop_process

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PREFECT = [str(BIN / "prefect"), "--no-prompt"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop(processes: list[subprocess.Popen]) -> None:
    for process in reversed(processes):
        stop_process(process, timeout=5)


@dataclass
class Stack:
    """Server, pool, ``prefect deploy --all``, worker; ``env`` points a command at the server."""

    home: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def api(self) -> str:
        return self.env["PREFECT_API_URL"]

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def start(self, extra_env: dict[str, str] | None = None) -> Stack:
        api = f"http://127.0.0.1:{free_port()}/api"
        self.env = {**os.environ, "PREFECT_HOME": str(self.home / "prefect"), "PREFECT_API_URL": api,
                    "PREFECT_WORKER_QUERY_SECONDS": "1", "SOHOA_WORK": str(self.home / "work"),
                    "PWD": str(REPO), **(extra_env or {})}  # prefect.yaml's pull step runs the flow from {{ $PWD }}
        self.logs.mkdir(parents=True, exist_ok=True)
        port = api.split(":")[2].split("/")[0]
        self._spawn("server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port])
        wait(lambda: healthy(api), 90, "the Prefect server")
        created = subprocess.run([*PREFECT, "work-pool", "create", "sohoa", "--type", "sohoa"], env=self.env,
                                 capture_output=True, text=True)
        assert created.returncode == 0, created.stdout + created.stderr  # the worker type is registered
        deployed = subprocess.run([*PREFECT, "deploy", "--all"], env=self.env, cwd=REPO, capture_output=True, text=True)
        assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
        return self

    def start_worker(self, limit: int = 2) -> subprocess.Popen:
        return self._spawn("worker", [*PREFECT, "worker", "start", "--pool", "sohoa", "--limit", str(limit)])

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}-{len(self.processes)}.log", "w")
        process = subprocess.Popen(command, env=self.env, cwd=self.home, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        stop(self.processes)

    def run(self, deployment: str, **params) -> str:
        """A flow run of the deployment (as "Run" in the UI does); returns its id."""
        args = [arg for name, value in params.items()
                for arg in ("--param", f"{name}={value if isinstance(value, str) else json.dumps(value)}")]
        done = subprocess.run([*PREFECT, "deployment", "run", deployment, *args], env=self.env, capture_output=True,
                              text=True, check=True)
        assert "Created flow run" in done.stdout
        return done.stdout.split("UUID:")[1].split()[0]

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"{self.api}{path}", timeout=10) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict, attempts: int = 5) -> dict | list:
        """POST as the UI does; a 503 (the SQLite-backed server busy under load) is tried again."""
        request = urllib.request.Request(f"{self.api}{path}", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        for attempt in range(attempts):
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    data = response.read()
                    return json.loads(data) if data else {}
            except urllib.error.HTTPError as exc:
                if exc.code != 503 or attempt == attempts - 1:
                    raise
                time.sleep(2)
        raise AssertionError("unreachable")

    def flow_run(self, run_id: str) -> dict:
        return self.get(f"/flow_runs/{run_id}")

    def wait_state(self, run_id: str, names: set[str], timeout: float) -> dict:
        wait(lambda: self.flow_run(run_id)["state_name"] in names, timeout,
             f"flow run {run_id} to be {sorted(names)} (see {self.logs})")
        return self.flow_run(run_id)

    def worker_logs(self) -> str:
        return "".join(p.read_text() for p in self.logs.glob("worker-*.log"))
