"""Benchmark: peak memory of `sohoa run` on one 200-page scanned dossier (target: under 1.5 GB).

    .venv/bin/python bench/memory_200_pages.py [--pages 200]

Writes a 300 dpi image-only PDF of N pages (synthetic Vietnamese forms, generated one page at
a time), runs `sohoa run` on it with fresh local stores, and samples every 0.2 s the resident
memory of the whole process tree: the CLI, its tesseract children and Prefect's embedded
server. Prints the peak of the tree and of the CLI process alone, with pages per minute.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sohoa_dev import synth  # noqa: E402

SOHOA = str(Path(sys.executable).parent / "sohoa")
PAGE_SIZE = 4096


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * PAGE_SIZE
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found.append(int(child))
                found += children(int(child))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return found


def pages(count: int):
    """Page images, generated lazily so the generator itself stays small."""
    made = 0
    seed = 0
    while made < count:
        for image in synth.render_pages(procedure="1.001193", seed=seed, dpi=300):
            if made == count:
                return
            made += 1
            yield image
        seed += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sohoa-bench-mem-") as tmp:
        root = Path(tmp)
        dossier = root / "dossier-200.pdf"
        started = time.perf_counter()
        synth.write_image_pdf(pages(args.pages), dossier, 300)
        print(f"generated {args.pages} pages ({dossier.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.0f} s")

        process = subprocess.Popen([SOHOA, "run", "--json", "-q", str(dossier), "--archive", str(root / "archive"),
                                    "--work", str(root / "work")], stdout=subprocess.PIPE, text=True)
        peak_tree = peak_cli = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak_tree, peak_cli
            while not done.is_set():
                cli = rss_bytes(process.pid)
                peak_cli = max(peak_cli, cli)
                peak_tree = max(peak_tree, cli + sum(rss_bytes(child) for child in children(process.pid)))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        started = time.perf_counter()
        sampler.start()
        out, _ = process.communicate()
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
        outcome = json.loads(out.splitlines()[-1])
    print(f"sohoa run: {outcome['status']}, {outcome['pages']} pages in {wall:.0f} s ({outcome['pages'] / wall * 60:.0f} pages/min)")
    print(f"peak RSS, CLI process alone      : {peak_cli / 2**20:7.0f} MiB")
    print(f"peak RSS, whole tree (+tesseract, Prefect server): {peak_tree / 2**20:7.0f} MiB  (target < 1536 MiB)")


if __name__ == "__main__":
    main()
