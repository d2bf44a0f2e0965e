"""Benchmark: Vietnamese character error rate (CER) of the OCR step on pages with ground truth.

    .venv/bin/python bench/ocr_quality.py [--seeds 2] [--compare] [--worst N] [--by-type] [--json-out FILE]
    .venv/bin/python bench/ocr_quality.py --real [--real-cache DIR] [--seeds N] [--json-out FILE]

``--real`` measures the real-document set of bench/real_set.py (../shared/corpus/real-vi: real scans
with a person's transcription, born-digital official letters rasterized clean and degraded, simulated
phone photos; docs/real-set.md), one row per page kind, instead of the generated sets; with ``--seeds``
as well, both, in one table. Each real page is its own file, captured and read alone, so its ``s/page``
is one page's latency (the generated dossiers read their pages in parallel): compare ``cpu/pg``.

Sets (sohoa_dev.synth, procedures 1.001193, 1.000894, 1.001612; 14 pages per seed): clean
300 dpi scans; degraded 300 dpi (tilt up to 1.5 degrees, noise, blur); clean 200 dpi; degraded
200 dpi. Every page goes through the pipeline's own capture and OCR (``ocr.engine.run_ocr``,
normalization included), on the same captured pages for every configuration.

Three CERs (bench/cer.py), all on NFC text with whitespace runs collapsed, over the truth's length:
``order`` (reading order) is the edit distance between whole pages with the two tone-placement
conventions folded (``hoà``/``hòa``), so it counts text read out of the truth's reading order;
``plain`` is the same without that folding, so text read in another order than the
truth's (two-column headers, ID cards) pays for every character moved; ``flex`` is
reading-order independent (lines matched to lines, a line split or joined costs nothing, OCR
text matching nothing counts as insertions). Targets (flex): <= 1% clean, <= 3% degraded.
The flexible errors split into ``in-line`` (edits inside matched lines: misread characters),
``missed`` (truth text not read at all) and ``extra`` (text read where the truth has none:
QR code, stamp, photo and rule noise), each as a share of the truth's characters.

``s/page`` is the OCR step's wall time over the pages (pages in parallel, ``settings.jobs``
workers); ``cpu/pg`` its CPU seconds per page (this process's threads and its tesseract
processes), which depends less on what else the machine is running. ``--compare`` also
measures other languages and page segmentation modes and the script model ``Vietnamese``
(Debian tesseract-ocr-script-viet) when installed. ``--worst N`` prints the N worst pages of
each set for the first configuration, with what the flexible metric could not match.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import cer  # noqa: E402
import real_set  # noqa: E402
from sohoa_dev import synth  # noqa: E402

from sohoa.kernel.settings import Settings  # noqa: E402
from sohoa.steps import capture as capturing  # noqa: E402
from sohoa.steps import ocr as engine  # noqa: E402
from sohoa.storage import open_store  # noqa: E402

PROCEDURES = ("1.001193", "1.000894", "1.001612")
SETS = {
    "clean 300 dpi": (300, False),
    "degraded 300 dpi": (300, True),
    "clean 200 dpi": (200, False),
    "degraded 200 dpi": (200, True),
}
COMPARE = {  # every entry names its languages and psm, whatever the default
    "vie psm 3": {"languages": "vie", "psm": 3},
    "vie+eng psm 3": {"languages": "vie+eng", "psm": 3},
    "vie+eng psm 4": {"languages": "vie+eng", "psm": 4},
    "vie+eng psm 6": {"languages": "vie+eng", "psm": 6},
    "vie psm 4": {"languages": "vie", "psm": 4},
    "vie psm 6": {"languages": "vie", "psm": 6},
    "Vietnamese psm 3": {"languages": "Vietnamese", "psm": 3},  # script model
    "Vietnamese psm 4": {"languages": "Vietnamese", "psm": 4},
}


@dataclass
class PageScore:
    set: str
    dossier: str
    n: int
    doc_type: str
    plain: cer.Score
    flex: cer.Flexible
    order: cer.Score
    text: str
    truth: str


def installed_languages(cmd: str = "tesseract") -> set[str]:
    out = subprocess.run([cmd, "--list-langs"], capture_output=True, text=True, timeout=30)
    return set((out.stdout + out.stderr).split())


def prepare_sets(root: Path, seeds: int, settings: Settings, sets: dict[str, tuple[int, bool]]):
    """Generate and capture every dossier once: {set: [(name, truth, captured)]}."""
    store = open_store(settings.work)
    store.ensure_ready()
    prepared = {}
    for label, (dpi, degrade) in sets.items():
        items = []
        for procedure in PROCEDURES:
            for seed in range(seeds):
                name = f"{procedure}-s{seed}"
                path = root / f"{name}-{dpi}-{'degraded' if degrade else 'clean'}.pdf"
                truth = synth.make_dossier(path, procedure=procedure, seed=seed, dpi=dpi, degrade=degrade)
                info = capturing.describe_source(path, settings)
                captured = capturing.capture(path, info, store, settings, capturing.capture_key(info, settings))
                items.append((name, truth, captured))
        prepared[label] = items
    return store, prepared


def prepare_real(cache: Path, settings: Settings, store) -> dict[str, list]:
    """Capture every page of the real set once, as the generated dossiers are: {kind: [(name, truth, captured)]}.

    A page's truth is wrapped like a one-page synth truth, so ``measure`` reads and scores it unchanged.
    """
    prepared: dict[str, list] = {kind: [] for kind in real_set.KINDS}
    for page in real_set.build(cache):
        info = capturing.describe_source(page.path, settings)
        captured = capturing.capture(page.path, info, store, settings, capturing.capture_key(info, settings))
        truth = SimpleNamespace(pages=[SimpleNamespace(n=1, doc_type=page.source, text=page.truth)])
        prepared[page.kind].append((page.name, truth, captured))
    return {kind: items for kind, items in prepared.items() if items}


def cpu_seconds() -> float:
    """CPU time of this process (every thread: an in-process engine) and of its waited-for children (tesseract processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(store, items, label: str, settings: Settings) -> tuple[list[PageScore], float, float]:
    pages: list[PageScore] = []
    seconds = cpu = 0.0
    for name, truth, captured in items:
        started, started_cpu = time.perf_counter(), cpu_seconds()
        result = engine.run_ocr(captured, store, settings, engine.ocr_key(captured.key, settings))
        seconds += time.perf_counter() - started
        cpu += cpu_seconds() - started_cpu
        assert len(result.pages) == len(truth.pages), (name, len(result.pages), len(truth.pages))
        for expected, read in zip(truth.pages, result.pages):
            pages.append(PageScore(label, name, expected.n, expected.doc_type, cer.plain(read.text, expected.text),
                                   cer.flexible(read.text, expected.text), cer.reading_order(read.text, expected.text),
                                   read.text, expected.text))
    return pages, seconds, cpu


def total(scores) -> cer.Score:
    out = cer.Score(0, 0)
    for s in scores:
        out = out + cer.Score(s.errors, s.chars)
    return out


def show_worst(pages: list[PageScore], n: int) -> None:
    for p in sorted(pages, key=lambda p: p.flex.cer, reverse=True)[:n]:
        print(f"\n--- {p.set} {p.dossier} page {p.n} ({p.doc_type}): flex {p.flex.cer:.2%} "
              f"({p.flex.errors}/{p.flex.chars}), plain {p.plain.cer:.2%}")
        for t in p.flex.missed:
            print(f"    missed  {t!r}")
        for o in p.flex.extra:
            print(f"    extra   {o!r}")
        for t, o, d in p.flex.matches:
            print(f"    {d:2d} edits {t!r} -> {o!r}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=None,
                        help="dossiers per procedure and set (14 pages per seed; default 2, none with --real)")
    parser.add_argument("--real", action="store_true", help="measure the real-document set (bench/real_set.py)")
    parser.add_argument("--real-cache", type=Path, default=None, metavar="DIR",
                        help="keep the rendered real pages here (default: a temp dir, rendered again each run)")
    parser.add_argument("--json-out", type=Path, default=None, metavar="FILE", help="write every row and page as JSON")
    parser.add_argument("--compare", action="store_true", help="also measure other languages, psm and the script model")
    parser.add_argument("--only", action="append", default=[], metavar="CONFIG",
                        help="measure only these configurations (names as printed; repeatable)")
    parser.add_argument("--sets", action="append", default=[], metavar="SET", help="only these sets (repeatable)")
    parser.add_argument("--worst", type=int, default=0, metavar="N", help="print the N worst pages of each set (first configuration)")
    parser.add_argument("--by-type", action="store_true", help="flexible CER per document type and set")
    args = parser.parse_args()

    default = Settings()
    configs = {f"{default.languages} psm {default.psm} (default)": {}}
    if args.compare:
        have = installed_languages(default.tesseract_cmd)
        for name, overrides in COMPARE.items():
            if (overrides["languages"], overrides["psm"]) == (default.languages, default.psm):
                continue  # measured as the default
            langs = overrides.get("languages", default.languages).split("+")
            if all(lang in have for lang in langs):
                configs[name] = overrides
            else:
                print(f"# skipped {name}: language data missing ({overrides.get('languages')})", file=sys.stderr)
    if args.only:
        configs = {k: v for k, v in configs.items() if k in args.only or k.split(" (")[0] in args.only}
    sets = {k: v for k, v in SETS.items() if not args.sets or k in args.sets}
    seeds = args.seeds if args.seeds is not None else (0 if args.real else 2)
    if args.real and not (real_set.CORPUS / "README.md").is_file():
        sys.exit(f"# real set: {real_set.CORPUS} is absent (../shared/corpus/real-vi is kept outside the repository)")

    with tempfile.TemporaryDirectory(prefix="sohoa-bench-cer-") as tmp:
        root = Path(tmp)
        base = Settings(archive=str(root / "archive"), work=str(root / "work"))
        started = time.perf_counter()
        store, prepared = prepare_sets(root, seeds, base, sets if seeds else {})
        if args.real:
            prepared.update(prepare_real(args.real_cache or root / "real", base, store))
        print(f"# {sum(len(v) for v in prepared.values())} dossiers or pages prepared and captured in "
              f"{time.perf_counter() - started:.0f} s; OCR jobs={base.jobs}", flush=True)
        print(f"{'configuration':26s} {'set':31s} {'pages':>5s} {'order':>7s} {'flex':>7s} {'plain':>7s} {'in-line':>7s} "
              f"{'missed':>7s} {'extra':>7s} {'OCR s':>6s} {'s/page':>6s} {'cpu/pg':>6s}")
        first: list[PageScore] | None = None
        rows: list[dict] = []
        for name, overrides in configs.items():
            settings = base.model_copy(update=overrides)
            every: list[PageScore] = []
            for label, items in prepared.items():
                pages, seconds, cpu = measure(store, items, label, settings)
                every += pages
                rows.append(row(name, label, pages, seconds, cpu))
                print_row(rows[-1])
            bad = [p for p in every if unicodedata.normalize("NFC", p.text) != p.text or "\u00d0" in p.text
                   or "\u00f0" in p.text]
            if bad:
                print(f"{name:26s} !! {len(bad)} pages not NFC or with Ð/ð (eth)", flush=True)
            if args.by_type:
                groups: dict[tuple[str, str], list[PageScore]] = defaultdict(list)
                for p in every:
                    groups[p.set, p.doc_type].append(p)
                for (label, doc_type), ps in groups.items():
                    print(f"{'':26s}   {label:18s} {doc_type:30s} {len(ps):3d} pages  flex "
                          f"{total(p.flex for p in ps).cer:7.2%}  plain {total(p.plain for p in ps).cer:7.2%}")
            if first is None:
                first = every
        if args.worst and first:
            for label in prepared:
                show_worst([p for p in first if p.set == label], args.worst)
        if args.json_out:
            write_json(args.json_out, rows, first or [])


def row(configuration: str, label: str, pages: list[PageScore], seconds: float, cpu: float) -> dict:
    """One table row: the set's CERs (errors over the truth's characters, summed over its pages) and times."""
    plain, flex, order = (total(getattr(p, k) for p in pages) for k in ("plain", "flex", "order"))
    return {
        "configuration": configuration, "set": label, "pages": len(pages), "chars": flex.chars,
        "reading_order_cer": order.cer, "flexible_cer": flex.cer, "plain_cer": plain.cer,
        "in_line": sum(d for p in pages for _, _, d in p.flex.matches) / flex.chars,
        "missed": sum(len(t) for p in pages for t in p.flex.missed) / flex.chars,
        "extra": sum(len(o) for p in pages for o in p.flex.extra) / flex.chars,
        "ocr_s": seconds, "s_per_page": seconds / len(pages), "cpu_per_page": cpu / len(pages),
    }


def print_row(r: dict) -> None:
    print(f"{r['configuration']:26s} {r['set']:31s} {r['pages']:5d} {r['reading_order_cer']:7.2%} "
          f"{r['flexible_cer']:7.2%} {r['plain_cer']:7.2%} {r['in_line']:7.2%} {r['missed']:7.2%} {r['extra']:7.2%} "
          f"{r['ocr_s']:6.1f} {r['s_per_page']:6.2f} {r['cpu_per_page']:6.2f}", flush=True)


def write_json(path: Path, rows: list[dict], pages: list[PageScore]) -> None:
    """The table's rows and, for the first configuration, every page's three CERs (to find regressions)."""
    detail = [{"set": p.set, "name": p.dossier, "page": p.n, "doc_type": p.doc_type, "chars": p.flex.chars,
               "reading_order_cer": p.order.cer, "flexible_cer": p.flex.cer, "plain_cer": p.plain.cer} for p in pages]
    path.write_text(json.dumps({"rows": rows, "pages": detail}, ensure_ascii=False, indent=1), "utf-8")


if __name__ == "__main__":
    main()
