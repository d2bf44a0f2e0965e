"""The README's deployment path: a Prefect server, `prefect deploy --all`, a worker, runs from deployments.

The ``sohoa`` worker (flows/worker.py) runs flow runs inside its own process. (Prefect's process
worker runs the same deployments: ``bench/throughput.py --process-worker`` measures it.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from flows.worker import UnsupportedEntrypoint, flow_module

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PREFECT = [str(BIN / "prefect"), "--no-prompt"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _stop(processes: list[subprocess.Popen]) -> None:
    """Prefect 3.9's worker does not exit on SIGTERM while idle: give it a moment, then kill it."""
    for process in reversed(processes):
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _run(deployment: str, env: dict, **params) -> str:
    args = [arg for name, value in params.items()
            for arg in ("--param", f"{name}={value if isinstance(value, str) else json.dumps(value)}")]
    done = subprocess.run([*PREFECT, "deployment", "run", deployment, *args], env=env, capture_output=True, text=True,
                          check=True)
    assert "Created flow run" in done.stdout
    return done.stdout.split("UUID:")[1].split()[0]


def _flow_run(env: dict, run_id: str) -> dict:
    api = env["PREFECT_API_URL"]
    with urllib.request.urlopen(f"{api}/flow_runs/{run_id}", timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_deploy_all_then_workers_archive_dossiers(tmp_path, birth_pdf):
    api = f"http://127.0.0.1:{_free_port()}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api,
           "PREFECT_WORKER_QUERY_SECONDS": "1", "SOHOA_WORK": str(tmp_path / "work"),
           "PWD": str(REPO)}  # prefect.yaml's pull step runs the flow from {{ $PWD }} at deploy time
    logs = tmp_path / "logs"
    logs.mkdir()
    port = api.split(":")[2].split("/")[0]
    processes = [subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port],
                                  env=env, stdout=open(logs / "server.log", "w"), stderr=subprocess.STDOUT)]
    try:
        _wait(lambda: _healthy(api), 90, "the Prefect server")
        created = subprocess.run([*PREFECT, "work-pool", "create", "sohoa", "--type", "sohoa"], env=env,
                                 capture_output=True, text=True)
        assert created.returncode == 0, created.stdout + created.stderr  # the worker type is registered
        deployed = subprocess.run([*PREFECT, "deploy", "--all"], env=env, cwd=REPO, capture_output=True, text=True)
        assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
        worker = subprocess.Popen([*PREFECT, "worker", "start", "--pool", "sohoa", "--limit", "2"], env=env,
                                  cwd=tmp_path, stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT)
        processes.append(worker)

        archive = tmp_path / "archive"
        first = _run("process-dossier/process-dossier", env, source=str(birth_pdf[0]), archive=str(archive))
        code = birth_pdf[1].dossier_code
        manifest = archive / "dossiers" / code / "manifest.json"
        _wait(manifest.exists, 240, f"the worker to archive {code} (see {logs})")
        assert json.loads(manifest.read_text())["status"] == "passed"

        # the batch deployment: same dossier into another archive, every step from the work store
        other = tmp_path / "archive-2"
        second = _run("process-batch/process-batch", env, sources=[str(birth_pdf[0])], archive=str(other))
        manifest = other / "dossiers" / code / "manifest.json"
        _wait(manifest.exists, 240, f"the worker to archive {code} from a batch (see {logs})")
        steps = json.loads(manifest.read_text())["steps"]
        assert all(steps[name]["cached"] for name in ("capture", "ocr", "classify", "verify"))

        # both runs ran inside the one worker process, no process of their own
        for run_id in (first, second):
            _wait(lambda run_id=run_id: _flow_run(env, run_id)["state_type"] == "COMPLETED", 60, "a completed run")
            host_pid = _flow_run(env, run_id)["infrastructure_pid"]
            assert host_pid.split(":")[1] == str(worker.pid), host_pid
    finally:
        _stop(processes)
    assert "Traceback" not in (logs / "worker.log").read_text()


def test_the_worker_runs_only_sohoa_flows():
    assert flow_module("flows/process.py:process_dossier") == ("flows.process", "process_dossier")
    assert flow_module("flows.process.process_batch") == ("flows.process", "process_batch")
    for hostile in ("../evil.py:run", "os.py:system", "/tmp/flows/x.py:f", "flows/../os.py:system", "flows/x-y.py:f",
                    "flows/process.py:", "process_dossier"):
        with pytest.raises(UnsupportedEntrypoint):
            flow_module(hostile)
