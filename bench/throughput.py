"""Benchmark: OCR throughput of the pipeline against the raw tesseract bound, in one run.

    .venv/bin/python bench/throughput.py [--pages 60] [--jobs N] [--json-out FILE]

Generates synthetic Vietnamese dossiers (300 dpi scanned PDFs, every third one degraded:
tilt, noise, blur) until there are at least ``--pages`` pages, then measures on this machine:

  a) raw bound: the tesseract program over the same normalized page images the pipeline reads
     (upright, deskewed, grey; written beforehand, not timed), one process per page, ``--jobs``
     at a time, one thread each (OMP_THREAD_LIMIT=1), txt + tsv + text-only PDF: the outputs
     the pipeline asks tesseract for;
  b) ``sohoa run`` on all dossiers end to end (embedded Prefect, so its start-up is included;
     the Prefect database exists beforehand), fresh archive and work stores;
  c) the same dossiers through a running Prefect server and a process worker (steady state: a
     warm-up batch ran first), as one ``process-batch`` deployment run, fresh stores; timed from
     the run's creation to its completion;
  d) OCRmyPDF on the same PDFs, one after the other, ``--jobs`` each, doing the same job (pages
     turned upright, PDF/A-2b, JPEGs passed through: see OCRMYPDF_ARGS), when ``ocrmypdf`` is on
     PATH or in ./.venv-ocrmypdf;
  e) the finished batch submitted again (``sohoa run``, same stores): every input a duplicate;
  f) the batch reprocessed into a second archive with the same work store: every step cached.

Prints pages per minute and the ratios b/a, c/a, d/c, e/b and f/b.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
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

from ocr import engine, normalize  # noqa: E402
from pipeline import capture as capturing  # noqa: E402
from pipeline import synth  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from storage import materialize, open_store  # noqa: E402


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


def steady_state(inputs: list[Path], warmup: Path, root: Path, env: dict[str, str]) -> float:
    """Server + process worker; a warm-up batch, then the timed batch as one deployment run."""
    api = f"http://127.0.0.1:{_free_port()}/api"
    env = {**env, "PREFECT_API_URL": api, "PREFECT_WORKER_QUERY_SECONDS": "1", "PWD": str(REPO),
           "SOHOA_WORK": str(root / "c-work")}
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    port = api.split(":")[2].split("/")[0]
    prefect = [str(BIN / "prefect"), "--no-prompt"]
    processes = [subprocess.Popen([*prefect, "server", "start", "--host", "127.0.0.1", "--port", port], env=env,
                                  stdout=open(logs / "server.log", "w"), stderr=subprocess.STDOUT)]
    try:
        _wait_healthy(api, 120)
        subprocess.run([*prefect, "work-pool", "create", "sohoa", "--type", "process"], env=env, check=True, capture_output=True)
        subprocess.run([*prefect, "deploy", "--all"], env=env, cwd=REPO, check=True, capture_output=True)
        processes.append(subprocess.Popen([*prefect, "worker", "start", "--pool", "sohoa", "--limit", "1"], env=env,
                                          cwd=root, stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT))
        code = ("import json, sys, time\n"
                "from prefect.deployments import run_deployment\n"
                "sources, archive = json.loads(sys.argv[1]), sys.argv[2]\n"
                "started = time.perf_counter()\n"
                "run = run_deployment('process-batch/process-batch', parameters={'sources': sources, 'archive': archive},"
                " timeout=900, poll_interval=0.5)\n"
                "print(json.dumps({'state': run.state.type.value, 'seconds': time.perf_counter() - started}))\n")

        def batch(sources: list[Path], archive: Path) -> float:
            done = subprocess.run([sys.executable, "-c", code, json.dumps([str(s) for s in sources]), str(archive)],
                                  env=env, capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            if result["state"] != "COMPLETED":
                raise SystemExit(f"the batch run ended {result['state']} (logs in {logs})")
            return result["seconds"]

        batch([warmup], root / "c-warmup-archive")
        return batch(inputs, root / "c-archive")
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


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
    parser.add_argument("--json-out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    settings = Settings()
    results: dict[str, float] = {}
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
        results["a"] = raw_tesseract(normalized, root / "raw", args.jobs, settings.languages, settings.psm)
        _row("a) raw tesseract", results["a"], pages)
        sohoa_run([warmup], root / "warm-archive", root / "warm-work", env, {"passed", "needs_review"})  # creates the DB
        results["b"] = sohoa_run(inputs, root / "b-archive", root / "b-work", env, {"passed", "needs_review"})
        _row("b) sohoa run", results["b"], pages)
        results["e"] = sohoa_run(inputs, root / "b-archive", root / "b-work", env, {"duplicate"})
        _row("e) same batch again", results["e"], pages)
        results["f"] = sohoa_run(inputs, root / "f-archive", root / "b-work", env, {"passed", "needs_review"})
        _row("f) reprocess, cached", results["f"], pages)
        results["c"] = steady_state(inputs, warmup, root, env)
        _row("c) server + worker", results["c"], pages)
        cmd = ocrmypdf_command()
        if cmd:
            results["d"] = ocrmypdf_run(cmd, inputs, root / "ocrmypdf", args.jobs, settings.languages)
            _row("d) OCRmyPDF", results["d"], pages)
        else:
            print("d) OCRmyPDF               not installed (python3 -m venv .venv-ocrmypdf && .venv-ocrmypdf/bin/pip install ocrmypdf)")
    a, b, c = results["a"], results["b"], results["c"]
    print(f"b/a  one-shot CLI vs raw bound (target <= 1.30)     : {b / a:6.3f}")
    print(f"c/a  steady state vs raw bound (target <= 1.10)     : {c / a:6.3f}")
    if "d" in results:
        print(f"d/c  OCRmyPDF vs steady state (target >= 1.8)       : {results['d'] / c:6.3f}")
    print(f"e/b  finished batch submitted again (target <= 0.03): {results['e'] / b:6.3f}")
    print(f"f/b  reprocessed with every step cached             : {results['f'] / b:6.3f}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"pages": pages, "dossiers": len(inputs), "jobs": args.jobs, "seconds": results}))


def _row(label: str, seconds: float, pages: int) -> None:
    print(f"{label:26s} {seconds:8.2f} s {pages / seconds * 60:8.1f} pages/min", flush=True)


if __name__ == "__main__":
    main()
