"""A Prefect worker that runs sohoa's flow runs inside its own long-lived process.

Why: Prefect's process worker starts a new Python process for every flow run; importing
Prefect, NumPy, OpenCV and the pipeline and loading the OCR models costs that process about
3 s of CPU and 6 s of wall time before it reads a page (measured on 2 cores), so on a small
machine a dossier of five pages paid nearly half again its OCR time, with one core idle while
the other started the process. This worker keeps all of it loaded: each flow run is a thread
of the worker, and every run in the process borrows pages from the same warm engine pool
(sohoa/ocr/libtesseract.EnginePool), so runs that overlap interleave their pages on every core.

It is an ordinary Prefect worker type (``sohoa``), registered through the ``prefect.collections``
entry point, so Prefect's own commands drive it::

    prefect work-pool create sohoa --type sohoa
    prefect worker start --pool sohoa --limit 4

What it gives up, next to the process worker:
  - isolation: a crash in native code (libtesseract, OpenCV) ends the worker and every run
    in it; Prefect marks them crashed and a retry reuses their finished steps;
  - per-run environment: job variables ``env`` and ``command`` cannot apply to a thread and
    are refused; settings come from the worker's environment;
  - code reloading: flows are imported once; restart the worker after upgrading sohoa.
It runs only sohoa's own flows (entrypoints in the ``sohoa.orchestration`` package of the installed sohoa).

This module is imported by every Prefect process that loads collections (the server too),
so it imports nothing of the pipeline at module level.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
from typing import Any

import anyio
import anyio.abc
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import InfrastructureNotAvailable
from prefect.workers.base import BaseJobConfiguration, BaseVariables, BaseWorker, BaseWorkerResult
from pydantic import Field

WORKER_TYPE = "sohoa"
FLOW_PACKAGE = ("sohoa", "orchestration")


class SohoaJobConfiguration(BaseJobConfiguration):
    """Nothing to configure per run: the run is a thread of the worker."""


class SohoaVariables(BaseVariables):
    env: dict[str, str | None] = Field(
        default_factory=dict, title="Environment Variables",
        description="Not supported: flow runs share the worker's process and its environment (SOHOA_*).",
    )


class SohoaWorkerResult(BaseWorkerResult):
    """How a flow run thread ended (0: the engine recorded the run's final state itself)."""


class UnsupportedEntrypoint(ValueError):
    pass


def flow_module(entrypoint: str) -> tuple[str, str]:
    """``sohoa/orchestration/process.py:process_dossier`` -> (``sohoa.orchestration.process``, ``process_dossier``),
    or UnsupportedEntrypoint.

    Only modules of the installed ``sohoa.orchestration`` package: the worker imports them into its own
    process, so it must not run code from wherever a deployment points.
    """
    path, _, name = entrypoint.rpartition(":")
    if not path or not name:
        path, _, name = entrypoint.rpartition(".")
    module = path.removesuffix(".py").replace("\\", "/").strip("/").replace("/", ".")
    parts = module.split(".")
    if tuple(parts[:2]) != FLOW_PACKAGE or len(parts) < 3 or not all(part.isidentifier() for part in parts) or not name.isidentifier():
        raise UnsupportedEntrypoint(
            f"the sohoa worker runs only sohoa's own flows (sohoa/orchestration/*.py); this deployment's entrypoint is {entrypoint!r}")
    return module, name


class SohoaWorker(BaseWorker[SohoaJobConfiguration, SohoaVariables, SohoaWorkerResult]):
    type = WORKER_TYPE
    job_configuration = SohoaJobConfiguration
    job_configuration_variables = SohoaVariables
    _description = ("Runs sohoa's flows as threads of one long-lived process: Prefect, the pipeline and the "
                    "OCR engines stay loaded between runs, and overlapping runs share the engines.")
    _display_name = "sohoa (in-process)"
    _documentation_url = "https://github.com/sohoa/sohoa#prefect-server-and-deployments"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._flows: dict[str, Any] = {}
        self._flows_lock = threading.Lock()

    async def setup(self) -> None:
        await super().setup()
        _send_pipeline_logs_to_prefect()
        await anyio.to_thread.run_sync(_warm_up)

    async def run(
        self, flow_run: FlowRun, configuration: SohoaJobConfiguration,
        task_status: anyio.abc.TaskStatus[str] | None = None,
    ) -> SohoaWorkerResult:
        if configuration.env and any(not key.startswith("PREFECT_") for key in configuration.env):
            raise UnsupportedEntrypoint("job variable 'env' cannot apply to a run inside the sohoa worker; "
                                        "set it in the worker's environment")
        entrypoint = await self._entrypoint(flow_run)
        flow = await anyio.to_thread.run_sync(self._load, entrypoint)
        identifier = f"{socket.gethostname()}:{os.getpid()}:{flow_run.id}"
        if task_status is not None:
            task_status.started(identifier)
        code = await anyio.to_thread.run_sync(_execute, flow, flow_run, self.get_flow_run_logger(flow_run))
        return SohoaWorkerResult(identifier=identifier, status_code=code)

    async def _entrypoint(self, flow_run: FlowRun) -> str:
        if flow_run.deployment_id is None:
            raise UnsupportedEntrypoint("the sohoa worker runs deployment runs only")
        deployment = await self.client.read_deployment(flow_run.deployment_id)
        if not deployment.entrypoint:
            raise UnsupportedEntrypoint(f"deployment {deployment.name!r} has no entrypoint")
        return deployment.entrypoint

    def _load(self, entrypoint: str) -> Any:
        with self._flows_lock:
            if entrypoint not in self._flows:
                module, name = flow_module(entrypoint)
                self._flows[entrypoint] = getattr(importlib.import_module(module), name)
            return self._flows[entrypoint]

    async def kill_infrastructure(self, infrastructure_pid: str, configuration: SohoaJobConfiguration,
                                  grace_seconds: int = 30) -> None:
        raise InfrastructureNotAvailable("a flow run inside the sohoa worker is a thread and cannot be killed")


def _send_pipeline_logs_to_prefect() -> None:
    """What ``PREFECT_LOGGING_EXTRA_LOGGERS=sohoa`` does, for a worker started without it: the
    pipeline's own progress lines (pages read) reach each flow run's log in the UI."""
    extra, ours = logging.getLogger("prefect.extra"), logging.getLogger("sohoa")
    for handler in extra.handlers:
        if handler not in ours.handlers:
            ours.addHandler(handler)
    ours.setLevel(min(extra.getEffectiveLevel(), logging.INFO))


def _warm_up() -> None:
    """Import the pipeline and load the OCR engines before the first run asks for them."""
    from sohoa.kernel.settings import Settings
    from sohoa.steps import ocr as engine

    importlib.import_module("sohoa.orchestration.process")
    engine.warm_up(Settings())


def _execute(flow: Any, flow_run: FlowRun, logger: Any) -> int:
    """Run the flow run to its end in this thread; the engine records its final state."""
    from prefect.exceptions import Abort, Pause
    from prefect.flow_engine import run_flow

    try:
        run_flow(flow, flow_run=flow_run, error_logger=logger, return_type="state")  # a Failed run is a state, not a traceback
    except (Pause, Abort):  # suspended for review, or the orchestrator said stop: the state is set
        return 0
    except Exception:  # a failed flow is recorded as Failed by the engine; anything else crashed it
        return 0 if _is_final(flow_run) else 1
    return 0


def _is_final(flow_run: FlowRun) -> bool:
    from prefect.client.orchestration import get_client

    try:
        state = get_client(sync_client=True).read_flow_run(flow_run.id).state
    except Exception:
        return False
    return state is not None and state.is_final()
