"""Benchmark: Vietnamese character error rate (CER) of the OCR step on generated dossiers with ground truth.

    .venv/bin/python bench/ocr_quality.py [--seeds 2] [--compare]

Sets: clean 300 dpi scans; degraded 300 dpi (tilt up to 1.5 degrees, noise, blur); clean 200 dpi.
Every page goes through the pipeline's own capture and OCR (normalization included); CER is the
edit distance between the OCR text and the truth, both NFC with whitespace runs collapsed,
over the truth's length. --compare also measures `vie` alone and page segmentation mode 6.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

from rapidfuzz.distance import Levenshtein

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ocr import engine  # noqa: E402
from pipeline import capture as capturing  # noqa: E402
from pipeline import synth  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from storage import open_store  # noqa: E402

PROCEDURES = ("1.001193", "1.000894", "1.001612")
SETS = {"clean 300 dpi": (300, False), "degraded 300 dpi": (300, True), "clean 200 dpi": (200, False)}


def squash(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def measure(root: Path, seeds: int, dpi: int, degrade: bool, settings: Settings) -> tuple[float, int, float]:
    store = open_store(settings.work)
    store.ensure_ready()
    errors = chars = pages = 0
    started = time.perf_counter()
    for procedure in PROCEDURES:
        for seed in range(seeds):
            path = root / f"{procedure}-{seed}-{dpi}-{degrade}.pdf"
            truth = synth.make_dossier(path, procedure=procedure, seed=seed, dpi=dpi, degrade=degrade)
            info = capturing.describe_source(path, settings)
            captured = capturing.capture(path, info, store, settings, capturing.capture_key(info, settings))
            result = engine.run_ocr(captured, store, settings, engine.ocr_key(captured.key, settings))
            for expected, read in zip(truth.pages, result.pages):
                errors += Levenshtein.distance(squash(read.text), squash(expected.text))
                chars += len(squash(expected.text))
                pages += 1
    return errors / chars, pages, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--compare", action="store_true", help="also measure vie alone and psm 6")
    args = parser.parse_args()
    configs = {"vie+eng psm 3 (default)": {}}
    if args.compare:
        configs |= {"vie psm 3": {"languages": "vie"}, "vie+eng psm 6": {"psm": 6}}
    with tempfile.TemporaryDirectory(prefix="sohoa-bench-cer-") as tmp:
        root = Path(tmp)
        print(f"{'configuration':26s} {'set':18s} {'pages':>5s} {'CER':>7s} {'s':>6s}")
        for name, overrides in configs.items():
            settings = Settings(archive=str(root / "archive"), work=str(root / f"work-{len(name)}-{hash(name)}"), **overrides)
            for label, (dpi, degrade) in SETS.items():
                cer, pages, seconds = measure(root, args.seeds, dpi, degrade, settings)
                print(f"{name:26s} {label:18s} {pages:5d} {cer:7.2%} {seconds:6.1f}", flush=True)


if __name__ == "__main__":
    main()
