"""Benchmark: N drops at once through the watcher and the worker, each archived or quarantined exactly once.

    .venv/bin/python bench/drops.py [--drops 500] [--limit 4] [--poll 5] [--timeout S] [--workdir DIR]
                                    [--json-out FILE]

Starts an S3 server (ministack from ``.venv-s3``), a Prefect server, the deployments, one ``sohoa`` worker
(sohoa/orchestration/worker.py) and ``sohoa watch s3://inbox``, as bench/load.py does, then writes
``--drops`` small objects into the inbox at once:

- distinct one-page PNG scans (most of them);
- copies of a few of them under other names (a fifth: duplicates of the first);
- five bad ones: four names no drop can be made of (``a//b``, a leading ``/``, a newline, no station
  prefix) and one that is not an image;
- two keys written twice: the second version within a second of the watcher taking the first.

OCR is the fake engine of ``tests/fake_engine.py`` (it reads every page as "Trang n"), installed in the
worker's process, so the benchmark measures the service (listing, submission, runs, moves), not
Tesseract: 500 drops take minutes, not hours.

When every drop has an outcome (or its run waits for a review, its input archived and moved out: the
outcome is written when the run ends) and no run is still going, it prints a table per kind of drop:
how many were dropped, their outcomes, how many were settled exactly once (the drop's objects under
exactly one of ``_sohoa/done/<drop id>/`` and ``_sohoa/quarantine/<drop id>/``), how many are stuck
(still in the inbox, or no outcome), and how long it took. Exits 1 unless every drop was settled
exactly once and none is stuck.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402
from load import REPO, TERMINAL, wait  # noqa: E402

sys.path.insert(0, str(REPO))

BAD_NAMES = ("quay-1//double-slash.png", "/leading-slash.png", "quay-1/new\nline.png", "no-station.png")


def fake_worker(argv: list[str]) -> int:
    """``prefect worker start ...`` in this process, with the fake OCR engine installed for every run."""
    from prefect.cli import app

    from sohoa.ocr import engines
    from tests.fake_engine import FakeEngine

    engines.use(FakeEngine()).__enter__()  # process-wide: the worker's runs are threads of this process
    sys.argv = ["prefect", *argv]
    return app()


class Stack(load.Stack):
    """bench/load.py's stack (ministack, Prefect server, deployments, one sohoa worker, the watcher), its worker
    with the fake engine."""

    def __init__(self, root: Path, limit: int, poll: float) -> None:
        super().__init__(root, limit, poll)
        self.env["PREFECT_WORKER_QUERY_SECONDS"] = "5"  # hundreds of scheduled runs: a query a second loads the server

    def worker_command(self) -> list[str]:
        return [sys.executable, __file__, "--worker", "--no-prompt", "worker", "start", "--pool", "sohoa",
                "--limit", str(self.limit)]


def scan_png(index: int) -> bytes:
    """A small one-page scan of its own: a sheet with its number and a few random marks."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (600, 800), 255)
    draw = ImageDraw.Draw(image)
    draw.text((40, 40), f"Trang {index} / ho so {index:05d}", fill=0)
    rng = random.Random(index)
    for _ in range(12):
        x, y = rng.randrange(560), rng.randrange(760)
        draw.rectangle((x, y, x + 30, y + 10), fill=rng.randrange(120))
    out = io.BytesIO()
    image.save(out, "PNG", dpi=(300, 300))
    return out.getvalue()


def plan(count: int) -> list[tuple[str, str, bytes]]:
    """What to drop at once: (kind, key, bytes); the overwritten keys' second versions come later."""
    bad = [("bad name", key, scan_png(900000 + i)) for i, key in enumerate(BAD_NAMES)]
    bad.append(("not an image", "quay-2/not-an-image.png", b"hello, this is no scan"))
    overwritten = [("overwritten v1", f"quay-3/overwritten-{i}.png", scan_png(800000 + i)) for i in range(2)]
    copies = max(1, count // 5)
    distinct_count = max(1, count - len(bad) - 2 * len(overwritten) - copies)
    distinct = [("distinct", f"quay-{i % 2 + 1}/scan-{i:05d}.png", scan_png(i)) for i in range(distinct_count)]
    same = [("identical", f"quay-2/copy-{i:05d}.png", distinct[i % min(5, distinct_count)][2]) for i in range(copies)]
    return distinct + same + bad + overwritten


def put_raw(store, key: str, data: bytes) -> None:
    """Write as a station's own client would, whatever the name (the store's API refuses unportable keys)."""
    store._client.put_object(store.bucket, store.prefix + key, io.BytesIO(data), len(data))


def overwrite_when_taken(store, work, keys: list[str], deadline: float) -> list[str]:
    """Write each key again as soon as the watcher has taken its first version (within a second of it)."""
    from sohoa.services import inbox

    pending, done = set(keys), []
    while pending and time.monotonic() < deadline:  # two listings a look, no reads: the stack is busy enough
        drops, taken = {d.key: d for d in inbox.scan(store)[0]}, inbox.taken(store, work)
        for key in [k for k in pending if k in drops and drops[k].ident in taken]:
            put_raw(store, key, scan_png(700000 + len(done)))
            pending.discard(key)
            done.append(key)
        time.sleep(0.5)
    return done


def settled(store, drops) -> dict[str, int]:
    """Per drop id, in how many areas (done, quarantine) its objects lie (exactly once: 1)."""
    from sohoa.services import inbox

    areas: dict[str, set[str]] = {}
    for area in (inbox.DONE, inbox.QUARANTINE):
        for info in store.list(area):
            if not info.key.endswith(".reason.json"):
                areas.setdefault(info.key[len(area):].split("/", 1)[0], set()).add(area)
    return {d.ident: len(areas.get(d.ident, ())) for d in drops}


def left_in_inbox(store) -> list[str]:
    from sohoa.services import inbox

    return [o.object_name for o in store._client.list_objects(store.bucket, recursive=True)
            if not (o.object_name or "").startswith(inbox.SYSTEM)]


def main() -> int:
    if sys.argv[1:2] == ["--worker"]:
        return fake_worker(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drops", type=int, default=500)
    parser.add_argument("--limit", type=int, default=4, help="flow runs the worker runs at a time")
    parser.add_argument("--poll", type=float, default=5.0, help="the watcher's poll interval (s)")
    parser.add_argument("--timeout", type=float, default=None, help="give up after this many seconds of dropping")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="sohoa-drops-"))
    stack = Stack(root, args.limit, args.poll)
    try:
        stack.start()
        result = run(stack, args)
    finally:
        stack.stop()
    report(result)
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


def run(stack: Stack, args: argparse.Namespace) -> dict:
    os.environ.update({k: v for k, v in stack.env.items() if k.startswith("SOHOA_S3_")})
    from sohoa.services import inbox
    from sohoa.storage import open_store

    store, work = open_store("s3://inbox"), open_store("s3://work")
    store.ensure_ready()
    work.ensure_ready()
    wait(lambda: store.exists(inbox.HEARTBEAT), 180, f"the watcher's first listing (see {stack.logs})", every=1)
    planned = plan(args.drops)
    kinds = {key: kind for kind, key, _ in planned}
    start = time.monotonic()
    for _kind, key, data in planned:
        put_raw(store, key, data)
    print(f"dropped {len(planned)} objects in {time.monotonic() - start:.1f} s", file=sys.stderr)
    deadline = start + (args.timeout or 300 + 3 * len(planned))
    again = overwrite_when_taken(store, work, [k for k, v in kinds.items() if v == "overwritten v1"], deadline)
    print(f"{len(again)} keys written again at {time.monotonic() - start:.1f} s", file=sys.stderr)
    expected = len(planned) - len(BAD_NAMES) + len(again)  # drops the ledger will hold (bad names: none)
    shown = 0.0
    while time.monotonic() < deadline:  # listings every 10 s; reads and the runs only once all may be done
        taken, inboxed = inbox.taken(store, work), left_in_inbox(store)
        if time.monotonic() - shown > 30:
            shown = time.monotonic()
            print(f"  {shown - start:5.0f} s: {len(taken)}/{expected} taken, {len(inboxed)} still in the inbox",
                  file=sys.stderr)
        if len(taken) >= expected and not inboxed and _all_ended(store, work, stack):
            break
        time.sleep(10)
    return summarize(store, work, stack, kinds, again, time.monotonic() - start)


def _all_ended(store, work, stack: Stack) -> bool:
    """Every drop has its outcome, or its run waits for a review (its input archived and moved out), and no
    run is still going."""
    from sohoa.services import inbox

    outcomes = {o.drop.ident for o in inbox.outcomes(store)}
    runs = {r["id"]: r["state_type"] for r in stack.drop_runs()}
    return all(e.drop.ident in outcomes or runs.get(e.flow_run_id) == "PAUSED" for e in inbox.ledger(store, work)) \
        and all(state in TERMINAL for state in runs.values())


def summarize(store, work, stack: Stack, kinds: dict[str, str], again: list[str], seconds: float) -> dict:
    from sohoa.services import inbox

    entries = inbox.ledger(store, work)
    outcomes = {o.drop.ident: o for o in inbox.outcomes(store)}
    bad = [o for o in outcomes.values() if o.reason == "bad_name"]
    drops = [e.drop for e in entries] + [o.drop for o in bad]
    where, runs = settled(store, drops), stack.drop_runs()
    state = {r["id"]: r["state_type"] for r in runs}
    run_of = {e.drop.ident: e.flow_run_id for e in entries}
    rows: dict[str, dict] = {}
    for drop in drops:
        kind = kinds.get(drop.key, "?")
        if drop.key in again and drop.version != _first_version(entries, drop.key):
            kind = "overwritten v2"
        row = rows.setdefault(kind, {"drops": 0, "outcomes": Counter(), "settled once": 0, "no outcome": 0})
        row["drops"] += 1
        outcome = outcomes.get(drop.ident)
        if outcome is not None:
            row["outcomes"][f"{outcome.status}{'/' + outcome.reason if outcome.reason else ''}"] += 1
        elif state.get(run_of.get(drop.ident)) == "PAUSED":  # archived and moved out; its run waits for a person
            row["outcomes"]["archived, in review"] += 1
        else:
            row["outcomes"]["none"] += 1
            row["no outcome"] += 1
        # settled once: in exactly one area; a v1 written over before its run read it has nothing to settle
        gone = outcome is not None and outcome.reason == "superseded"
        row["settled once"] += where[drop.ident] == 1 or (gone and where[drop.ident] == 0)
    stuck = left_in_inbox(store)
    archived = sum(n for row in rows.values() for name, n in row["outcomes"].items()
                   if name in ("passed", "needs_review", "rejected", "archived, in review"))
    manifests = manifest_count()
    ok = (not stuck and all(r["drops"] == r["settled once"] and not r["no outcome"] for r in rows.values())
          and len(bad) == len(BAD_NAMES) and all(r["state_type"] in TERMINAL for r in runs) and manifests == archived)
    return {"ok": ok, "seconds": round(seconds, 1), "drops": len(drops), "objects_written": len(kinds) + len(again),
            "rows": {k: {**v, "outcomes": dict(v["outcomes"])} for k, v in sorted(rows.items())},
            "left_in_inbox": stuck, "archived": archived, "manifests": manifests, "runs": dict(Counter(r["state_type"] for r in runs)),
            "resubmitted": sum(1 for e in entries if e.attempt > 1),
            "drops_per_minute": round(60 * len(drops) / seconds, 1) if seconds else None}


def manifest_count() -> int:
    """Archived dossiers: one manifest each (the same content archived twice would be one manifest with a second
    revision: compare with the archived drops that are not duplicates)."""
    from sohoa.storage import open_store

    keys = [i.key for i in open_store("s3://archive").list("dossiers/")]
    return sum(k.endswith("/manifest.json") for k in keys)


def _first_version(entries, key: str) -> str | None:
    firsts = sorted((e.taken_at, e.drop.version) for e in entries if e.drop.key == key)
    return firsts[0][1] if firsts else None


def report(result: dict) -> None:
    print(f"{'kind':<16} {'drops':>6} {'settled once':>13} {'no outcome':>11}  outcomes")
    for kind, row in result["rows"].items():
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(row["outcomes"].items()))
        print(f"{kind:<16} {row['drops']:>6} {row['settled once']:>13} {row['no outcome']:>11}  {outcomes}")
    print(f"{result['drops']} drops ({result['objects_written']} objects written) in {result['seconds']} s "
          f"({result['drops_per_minute']} a minute); runs {result['runs']}; resubmitted {result['resubmitted']}; "
          f"left in the inbox: {len(result['left_in_inbox'])}; {result['manifests']} manifests for "
          f"{result['archived']} archived drops; {'OK' if result['ok'] else 'FAILED'}")


if __name__ == "__main__":
    sys.exit(main())
