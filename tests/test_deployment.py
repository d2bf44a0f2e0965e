"""The README's deployment path: a Prefect server, `prefect deploy --all`, a process worker, a run."""

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

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


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


def test_deploy_all_then_a_worker_archives_a_dossier(tmp_path, birth_pdf):
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
        prefect = [str(BIN / "prefect"), "--no-prompt"]
        subprocess.run([*prefect, "work-pool", "create", "sohoa", "--type", "process"], env=env, check=True,
                       capture_output=True)
        deployed = subprocess.run([*prefect, "deploy", "--all"], env=env, cwd=REPO, capture_output=True, text=True)
        assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
        processes.append(subprocess.Popen([*prefect, "worker", "start", "--pool", "sohoa", "--limit", "1"], env=env,
                                          cwd=tmp_path, stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT))
        archive = tmp_path / "archive"
        run = subprocess.run([*prefect, "deployment", "run", "process-dossier/process-dossier",
                              "--param", f"source={birth_pdf[0]}", "--param", f"archive={archive}"],
                             env=env, capture_output=True, text=True, check=True)
        assert "Created flow run" in run.stdout
        code = birth_pdf[1].dossier_code
        manifest = archive / "dossiers" / code / "manifest.json"
        _wait(manifest.exists, 240, f"the worker to archive {code} (see {logs})")
        assert json.loads(manifest.read_text())["status"] == "passed"

        # the batch deployment: same dossier into another archive, every step from the work store
        other = tmp_path / "archive-2"
        run = subprocess.run([*prefect, "deployment", "run", "process-batch/process-batch",
                              "--param", f"sources={json.dumps([str(birth_pdf[0])])}", "--param", f"archive={other}"],
                             env=env, capture_output=True, text=True, check=True)
        assert "Created flow run" in run.stdout
        manifest = other / "dossiers" / code / "manifest.json"
        _wait(manifest.exists, 240, f"the worker to archive {code} from a batch (see {logs})")
        steps = json.loads(manifest.read_text())["steps"]
        assert all(steps[name]["cached"] for name in ("capture", "ocr", "classify", "verify"))
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
