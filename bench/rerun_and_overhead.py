"""Benchmark: the pipeline against raw tesseract on the same pages, and a cached rerun against the first run.

    .venv/bin/python bench/rerun_and_overhead.py [--dossiers 4] [--jobs N]

Generates synthetic birth-registration dossiers (5 pages each, 300 dpi scanned PDFs), then in
one run measures:
  a) raw bound: the tesseract CLI over the same page images (the PDFs' own JPEGs), one process
     per core, one thread each, txt + tsv + text-only PDF output (what the pipeline asks for);
  b) `sohoa run` on all dossiers, fresh stores (embedded Prefect, so its start-up is included);
  c) the same inputs into a second archive with the same work store: every step cached;
  d) the same inputs into the first archive again: recognised as duplicates, no step runs.
Prints wall times, pages per minute and the ratios b/a and c/b (also on the flows' own
durations, which exclude Prefect's start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline import synth  # noqa: E402

SOHOA = str(Path(sys.executable).parent / "sohoa")


def raw_tesseract(images: list[Path], out: Path, jobs: int) -> float:
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}

    def one(image: Path) -> None:
        subprocess.run(["tesseract", str(image), str(out / image.stem), "-l", "vie+eng", "--psm", "3", "--dpi", "300",
                        "-c", "textonly_pdf=1", "txt", "tsv", "pdf"], check=True, capture_output=True, env=env)

    started = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, images))
    return time.perf_counter() - started


def sohoa_run(inputs: list[Path], archive: Path, work: Path, status: str = "passed") -> tuple[float, float]:
    started = time.perf_counter()
    done = subprocess.run([SOHOA, "run", "--json", "-q", *map(str, inputs), "--archive", str(archive), "--work", str(work)],
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    outcomes = [json.loads(line) for line in done.stdout.splitlines()]
    assert all(o["status"] == status for o in outcomes), outcomes
    return wall, sum(o["duration_s"] for o in outcomes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dossiers", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sohoa-bench-") as tmp:
        root = Path(tmp)
        inputs = []
        for seed in range(args.dossiers):
            out = root / f"dossier-{seed}.pdf"
            synth.make_dossier(out, seed=seed)
            inputs.append(out)
        pages_dir, raw_out = root / "pages", root / "raw"
        pages_dir.mkdir()
        raw_out.mkdir()
        for path in inputs:
            subprocess.run(["pdfimages", "-j", str(path), str(pages_dir / path.stem)], check=True)
        images = sorted(pages_dir.glob("*.jpg"))
        raw = raw_tesseract(images, raw_out, args.jobs)
        first_wall, first_flows = sohoa_run(inputs, root / "archive", root / "work")
        again_wall, again_flows = sohoa_run(inputs, root / "archive-2", root / "work")
        dup_wall, dup_flows = sohoa_run(inputs, root / "archive", root / "work", status="duplicate")
    pages = len(images)
    print(f"{args.dossiers} dossiers, {pages} pages, {args.jobs} jobs, {os.cpu_count()} CPUs")
    print(f"a) raw tesseract           {raw:7.2f} s  {pages / raw * 60:6.1f} pages/min")
    print(f"b) sohoa run (first)       {first_wall:7.2f} s  {pages / first_wall * 60:6.1f} pages/min"
          f"  (flows alone {first_flows:.2f} s)")
    print(f"c) sohoa run (cached)      {again_wall:7.2f} s  (flows alone {again_flows:.2f} s)")
    print(f"d) sohoa run (duplicates)  {dup_wall:7.2f} s  (flows alone {dup_flows:.2f} s)")
    print(f"b/a  pipeline vs raw, CLI wall incl. Prefect start-up : {first_wall / raw:5.2f}")
    print(f"b/a  pipeline vs raw, flows alone                    : {first_flows / raw:5.2f}")
    print(f"c/b  cached rerun vs first, flows alone              : {again_flows / first_flows:6.3f}"
          f"  ({first_flows / again_flows:.0f}x faster)")
    print(f"c/b  cached rerun vs first, CLI wall                 : {again_wall / first_wall:6.3f}")


if __name__ == "__main__":
    main()
