"""The README's deployment path: a Prefect server, `prefect deploy --all`, a worker, runs from deployments.

The ``sohoa`` worker (sohoa/orchestration/worker.py) runs flow runs inside its own process. (Prefect's process
worker runs the same deployments: ``bench/throughput.py --process-worker`` measures it.)
"""

from __future__ import annotations

import json

import pytest

from sohoa.orchestration.worker import UnsupportedEntrypoint, flow_module
from tests.archived import manifest_path
from tests.prefect_stack import Stack, wait


@pytest.mark.slow
def test_deploy_all_then_workers_archive_dossiers(tmp_path, birth_pdf):
    stack = Stack(tmp_path).start()
    try:
        worker = stack.start_worker()
        archive = tmp_path / "archive"
        first = stack.run("process-dossier/process-dossier", source=str(birth_pdf[0]), archive=str(archive))
        code = birth_pdf[1].dossier_code
        wait(lambda: manifest_path(archive, code).exists(), 240, f"the worker to archive {code} (see {stack.logs})")
        manifest = manifest_path(archive, code)
        assert json.loads(manifest.read_text())["status"] == "passed"

        # the batch deployment: same dossier into another archive, every step from the work store
        other = tmp_path / "archive-2"
        second = stack.run("process-batch/process-batch", sources=[str(birth_pdf[0])], archive=str(other))
        wait(lambda: manifest_path(other, code).exists(), 240, f"the worker to archive {code} from a batch (see {stack.logs})")
        manifest = manifest_path(other, code)
        steps = json.loads(manifest.read_text())["steps"]
        assert all(steps[name]["cached"] for name in ("capture", "ocr", "classify", "verify"))

        # both runs ran inside the one worker process, no process of their own
        for run_id in (first, second):
            stack.wait_state(run_id, {"Completed"}, 60)
            host_pid = stack.flow_run(run_id)["infrastructure_pid"]
            assert host_pid.split(":")[1] == str(worker.pid), host_pid
    finally:
        stack.stop()
    assert "Traceback" not in stack.worker_logs()


def test_the_worker_runs_only_sohoa_flows():
    assert flow_module("sohoa/orchestration/process.py:process_dossier") == ("sohoa.orchestration.process", "process_dossier")
    assert flow_module("sohoa.orchestration.process.process_batch") == ("sohoa.orchestration.process", "process_batch")
    for hostile in ("../evil.py:run", "os.py:system", "/tmp/flows/x.py:f", "sohoa/orchestration/../../os.py:system",
                    "sohoa/orchestration/x-y.py:f", "sohoa/cli.py:main", "sohoa/orchestration/process.py:", "process_dossier"):
        with pytest.raises(UnsupportedEntrypoint):
            flow_module(hostile)
