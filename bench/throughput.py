"""Benchmark: OCR throughput of the pipeline against the raw tesseract bound, in one run.

    .venv/bin/python bench/throughput.py [--pages 60] [--jobs N] [--repeat N] [--process-worker] [--json-out FILE]

Generates synthetic Vietnamese dossiers (300 dpi scanned PDFs, every third one degraded:
tilt, noise, blur) until there are at least ``--pages`` pages, then measures on this machine:

  a) raw bound: the tesseract program over the same normalized page images the pipeline reads
     (upright, deskewed, grey; written beforehand, not timed), one process per page, ``--jobs``
     at a time, one thread each (OMP_THREAD_LIMIT=1), txt + tsv + text-only PDF: the outputs
     the pipeline asks tesseract for;
  b) ``sohoa run`` on all dossiers end to end (its own Prefect server, so its start-up is
     included; the Prefect database exists beforehand), fresh archive and work stores;
  c) the same dossiers through a running Prefect server (all its services on) and a ``sohoa``
     worker (sohoa/orchestration/worker.py: flow runs in the worker's own warm process), as one
     ``process-batch`` deployment run after a warm-up run, fresh stores; timed from the run's
     creation to its completion;
  g) the same dossiers as one ``process-dossier`` run each, all created at once (first round
     only; every step recomputed), timed from the first creation to the last completion;
  c') with ``--process-worker``: c on Prefect's process worker (a new Python process per run);
  d) OCRmyPDF on the same PDFs, one after the other, ``--jobs`` each, doing the same job (pages
     turned upright, PDF/A-2b, JPEGs passed through: see OCRMYPDF_ARGS), when ``ocrmypdf`` is on
     PATH or in ./.venv-ocrmypdf;
  e) the finished batch submitted again (``sohoa run``, same stores): every input a duplicate;
  f) the batch reprocessed into a second archive with the same work store: every step cached.

a, b and c are measured ``--repeat`` times, interleaved (a, b, c, a, b, c...), because a shared
machine's speed drifts; each round's ratios come from measures taken back to back. Prints
pages per minute and the ratios b/a, c/a, d/c, e/b, f/b and g/c.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent
SOHOA = str(BIN / "sohoa")
PROCEDURES = ("1.001193", "1.000894", "1.001612")

import cv2  # noqa: E402
from sohoa_dev import synth  # noqa: E402

from sohoa.kernel.settings import Settings  # noqa: E402
from sohoa.ocr import normalize  # noqa: E402
from sohoa.steps import capture as capturing  # noqa: E402
from sohoa.steps import ocr as engine  # noqa: E402
from sohoa.storage import materialize, open_store  # noqa: E402


def make_dossiers(root: Path, pages: int) -> tuple[list[Path], int]:
    inputs, total, seed = [], 0, 0
    while total < pages:
        path = root / f"dossier-{seed:02d}.pdf"
        truth = synth.make_dossier(path, procedure=PROCEDURES[seed % 3], seed=seed, degrade=seed % 3 == 2)
        inputs.append(path)
        total += len(truth.pages)
        seed += 1
    return inputs, total


def normalized_pages(inputs: list[Path], root: Path) -> list[tuple[Path, int]]:
    """The pipeline's own OCR copies of every page (untimed), as grey PGM files, with their dpi."""
    settings = Settings(archive=str(root / "scratch-archive"), work=str(root / "scratch-work"))
    store = open_store(settings.work)
    store.ensure_ready()
    out = root / "normalized"
    out.mkdir()
    pages = []
    for path in inputs:
        info = capturing.describe_source(path, settings)
        captured = capturing.capture(path, info, store, settings, capturing.capture_key(info, settings))
        for page in captured.pages:
            source = materialize(store, page.key, out / f"src-{path.stem}-{page.n}{Path(page.key).suffix}")
            image, gray = normalize.prepare(source, page.dpi, 90 if page.sideways else 0, page.skew)
            target = out / f"{path.stem}-p{page.n:02d}.pgm"
            cv2.imwrite(str(target), gray)
            source.unlink()
            pages.append((target, image.dpi))
    return pages


def raw_tesseract(pages: list[tuple[Path, int]], out: Path, jobs: int, languages: str, psm: int) -> float:
    out.mkdir()
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}

    def one(item: tuple[Path, int]) -> None:
        image, dpi = item
        subprocess.run(["tesseract", str(image), str(out / image.stem), "-l", languages, "--psm", str(psm),
                        "--dpi", str(dpi), "-c", "textonly_pdf=1", "txt", "tsv", "pdf"],
                       check=True, capture_output=True, env=env)

    started = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, pages))
    return time.perf_counter() - started


def sohoa_run(inputs: list[Path], archive: Path, work: Path, env: dict[str, str], expect: set[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([SOHOA, "run", "--json", "-q", *map(str, inputs), "--archive", str(archive), "--work", str(work)],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    outcomes = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    statuses = {o["status"] for o in outcomes}
    if done.returncode != 0 or len(outcomes) != len(inputs) or not statuses <= expect:
        raise SystemExit(f"sohoa run failed ({done.returncode}): {statuses}\n{done.stderr[-3000:]}")
    return wall


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(api: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the Prefect server at {api} did not start")


_SUBMIT = """
import json, sys, time
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
plan = json.loads(sys.argv[1])
out = {}

def batch(sources, archive, refresh=None):
    started = time.perf_counter()
    run = run_deployment("process-batch/process-batch", timeout=900, poll_interval=0.5,
                         parameters={"sources": sources, "archive": archive, "refresh": refresh})
    if run.state.type.value != "COMPLETED":
        raise SystemExit(f"the batch run ended {run.state.type.value}")
    return time.perf_counter() - started

def one_run_each(sources, archive, refresh):
    started = time.perf_counter()
    ids = [run_deployment("process-dossier/process-dossier", timeout=0,
                          parameters={"source": s, "archive": archive, "refresh": refresh}).id for s in sources]
    client = get_client(sync_client=True)
    while True:
        states = [client.read_flow_run(i).state for i in ids]
        if all(s.is_final() for s in states):
            break
        time.sleep(0.5)
    if any(s.type.value != "COMPLETED" for s in states):
        raise SystemExit(f"per-dossier runs ended {sorted({s.type.value for s in states})}")
    return time.perf_counter() - started

def settle():
    # wait until no run is scheduled or running: the warm-up's dossier that needs review gets a run of
    # its own (it suspends for the form), which must not share the cores with the timed batch
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    client = get_client(sync_client=True)
    busy = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
        any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING])))
    deadline = time.monotonic() + 300
    while client.read_flow_runs(flow_run_filter=busy) and time.monotonic() < deadline:
        time.sleep(0.5)

batch(plan["warmup"], plan["root"] + "/c-warmup-archive")
settle()
out["c"] = batch(plan["inputs"], plan["root"] + "/c-archive")
settle()
if plan["each"]:  # same work store: refresh recomputes every step instead of reusing c's results
    out["g"] = one_run_each(plan["inputs"], plan["root"] + "/g-archive", ["capture"])
print(json.dumps(out))
"""


# Recommended for a server that shares its machine with the OCR (README, "Prefect server"): the
# task-run recorder writes task states in batches instead of one transaction per state change
# (Prefect's default batch size is 1), and events in batches of 200; the UI shows task states up
# to the flush interval (5 s) later. Every service stays on.
SERVER_TUNING = {"PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
                 "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "200"}


def steady_state(inputs: list[Path], warmup: Path, root: Path, env: dict[str, str], worker_type: str,
                 each: bool) -> dict[str, float]:
    """Server + worker; a warm-up batch, then the timed batch as one deployment run (and one run per dossier)."""
    api = f"http://127.0.0.1:{_free_port()}/api"
    env = {**env, **SERVER_TUNING, "PREFECT_API_URL": api, "PREFECT_WORKER_QUERY_SECONDS": "1", "PWD": str(REPO),
           "SOHOA_WORK": str(root / f"c-work-{worker_type}"), "PREFECT_HOME": str(root / f"prefect-{worker_type}")}
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    port = api.split(":")[2].split("/")[0]
    prefect = [str(BIN / "prefect"), "--no-prompt"]
    processes = [subprocess.Popen([*prefect, "server", "start", "--host", "127.0.0.1", "--port", port], env=env,
                                  stdout=open(logs / "server.log", "w"), stderr=subprocess.STDOUT)]
    try:
        _wait_healthy(api, 120)
        subprocess.run([*prefect, "work-pool", "create", "sohoa", "--type", worker_type], env=env, check=True, capture_output=True)
        subprocess.run([*prefect, "deploy", "--all"], env=env, cwd=REPO, check=True, capture_output=True)
        processes.append(subprocess.Popen([*prefect, "worker", "start", "--pool", "sohoa", "--limit", "4"], env=env,
                                          cwd=root, stdout=open(logs / f"worker-{worker_type}.log", "w"),
                                          stderr=subprocess.STDOUT))
        plan = {"warmup": [str(warmup)], "inputs": [str(s) for s in inputs], "root": str(root), "each": each}
        done = subprocess.run([sys.executable, "-c", _SUBMIT, json.dumps(plan)], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"steady-state runs failed (logs in {logs}):\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        _stop(processes)


def _stop(processes: list[subprocess.Popen]) -> None:
    """Stop the worker and the server (Prefect 3.9's worker does not exit on SIGTERM/SIGINT when idle: kill it)."""
    from sohoa.orchestration.embedded import stop_process

    for process in reversed(processes):
        stop_process(process)


# The same job as the pipeline: pages turned upright, PDF/A-2b output, scanned JPEGs passed through
# (the internal PDF/A backend, no Ghostscript re-encoding), no optimization pass.
OCRMYPDF_ARGS = ["--rotate-pages", "--output-type", "pdfa", "--pdfa-backend", "internal", "--optimize", "0", "--quiet"]


def ocrmypdf_command() -> str | None:
    found = shutil.which("ocrmypdf")
    local = REPO / ".venv-ocrmypdf" / "bin" / "ocrmypdf"
    return found or (str(local) if local.exists() else None)


def ocrmypdf_run(cmd: str, inputs: list[Path], out: Path, jobs: int, languages: str) -> float:
    out.mkdir()
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    started = time.perf_counter()
    for path in inputs:
        subprocess.run([cmd, *OCRMYPDF_ARGS, "--jobs", str(jobs), "-l", languages, str(path), str(out / path.name)],
                       check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=60, help="at least this many pages (default 60)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of a, b and c, interleaved; ratios are given per round and as medians (default 1)")
    parser.add_argument("--process-worker", action="store_true",
                        help="also measure c with Prefect's process worker (a new Python process per flow run)")
    parser.add_argument("--json-out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    settings = Settings()
    rounds: list[dict[str, float]] = []
    once: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="sohoa-bench-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "PREFECT_HOME": str(root / "prefect-home"), "SOHOA_JOBS": str(args.jobs),
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        inputs, pages = make_dossiers(root, args.pages)
        warmup = root / "warmup.pdf"
        synth.make_dossier(warmup, include=["giay_chung_sinh"], seed=99)
        print(f"{len(inputs)} dossiers, {pages} pages, {args.jobs} jobs, {os.cpu_count()} CPUs, "
              f"engine {engine.engine_kind(settings)}, languages {settings.languages}, psm {settings.psm}", flush=True)
        normalized = normalized_pages(inputs, root)
        sohoa_run([warmup], root / "warm-archive", root / "warm-work", env, {"passed", "needs_review"})  # creates the DB
        for n in range(args.repeat):
            here = root / f"round-{n}"
            here.mkdir()
            print(f"-- round {n + 1} of {args.repeat}", flush=True)
            measured: dict[str, float] = {}
            measured["a"] = raw_tesseract(normalized, here / "raw", args.jobs, settings.languages, settings.psm)
            _row("a) raw tesseract", measured["a"], pages)
            measured["b"] = sohoa_run(inputs, here / "b-archive", here / "b-work", env, {"passed", "needs_review"})
            _row("b) sohoa run", measured["b"], pages)
            if n == 0:
                once["e"] = sohoa_run(inputs, here / "b-archive", here / "b-work", env, {"duplicate"})
                _row("e) same batch again", once["e"], pages)
                once["f"] = sohoa_run(inputs, here / "f-archive", here / "b-work", env, {"passed", "needs_review"})
                _row("f) reprocess, cached", once["f"], pages)
            steady = steady_state(inputs, warmup, here, env, "sohoa", each=n == 0)
            measured["c"] = steady["c"]
            _row("c) server + sohoa worker", measured["c"], pages)
            if "g" in steady:
                once["g"] = steady["g"]
                _row("g) one run per dossier", once["g"], pages)
            rounds.append(measured)
        if args.process_worker:
            (root / "process-worker").mkdir()
            once["c_process"] = steady_state(inputs, warmup, root / "process-worker", env, "process", each=False)["c"]
            _row("c') process worker", once["c_process"], pages)
        cmd = ocrmypdf_command()
        if cmd:
            once["d"] = ocrmypdf_run(cmd, inputs, root / "ocrmypdf", args.jobs, settings.languages)
            _row("d) OCRmyPDF", once["d"], pages)
        else:
            print("d) OCRmyPDF               not installed (python3 -m venv .venv-ocrmypdf && .venv-ocrmypdf/bin/pip install ocrmypdf)")
    _ratios(rounds, once)
    if args.json_out:
        args.json_out.write_text(json.dumps({"pages": pages, "dossiers": len(inputs), "jobs": args.jobs,
                                             "rounds": rounds, "once": once}))


def _ratios(rounds: list[dict[str, float]], once: dict[str, float]) -> None:
    """Each ratio per round (the measures of one round ran back to back) and its median over the rounds."""
    first = rounds[0]
    lines = [("b/a", "one-shot CLI vs raw bound", "<= 1.30", [r["b"] / r["a"] for r in rounds]),
             ("c/a", "steady state vs raw bound", "<= 1.05", [r["c"] / r["a"] for r in rounds])]
    if "d" in once:
        lines.append(("d/c", "OCRmyPDF vs steady state", ">= 1.8", [once["d"] / first["c"]]))
    lines += [("e/b", "finished batch submitted again", "<= 0.03", [once["e"] / first["b"]]),
              ("f/b", "reprocessed with every step cached", "", [once["f"] / first["b"]]),
              ("g/c", "one flow run per dossier vs one batch run", "", [once["g"] / first["c"]])]
    if "c_process" in once:
        lines.append(("c'/a", "steady state on the process worker", "", [once["c_process"] / first["a"]]))
    for name, what, target, values in lines:
        label = f"{name:5s}{what}" + (f" (target {target})" if target else "")
        shown = " ".join(f"{v:6.3f}" for v in values)
        median = f"   median {statistics.median(values):6.3f}" if len(values) > 1 else ""
        print(f"{label:58s}: {shown}{median}")


def _row(label: str, seconds: float, pages: int) -> None:
    print(f"{label:26s} {seconds:8.2f} s {pages / seconds * 60:8.1f} pages/min", flush=True)


if __name__ == "__main__":
    main()
