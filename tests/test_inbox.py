"""Watched inboxes on a real S3 server: drops found by full listings against the ledger, taken once,
moved out after archiving; and the whole service on a Prefect server with two workers."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from sohoa_dev import synth

from sohoa.services import inbox
from sohoa.storage import open_store
from tests.archived import dossier_dir
from tests.prefect_stack import BIN, PREFECT, Stack, wait


@pytest.fixture
def store(s3_env):
    store = open_store(f"s3://inbox-{uuid.uuid4().hex[:8]}")
    store.ensure_ready()
    return store


@pytest.fixture
def work(tmp_path):
    """The work store, which holds the ledger (stations cannot write there)."""
    work = open_store(str(tmp_path / "work"))
    work.ensure_ready()
    return work


def test_scan_finds_files_and_closed_folders_only(store):
    store.put_bytes("station-a/one.pdf", b"%PDF-1")
    store.put_bytes("station-b/dossier-7/0001.png", b"png")
    store.put_bytes("station-b/dossier-7/0002.png", b"png2")
    store.put_bytes("station-b/open/0001.png", b"png")  # no marker yet: still being scanned
    store.put_bytes(inbox.DONE + "station-a/old.pdf", b"%PDF-0")
    drops, waiting = inbox.scan(store)
    assert waiting == 2 and [(d.key, d.kind) for d in drops] == [("station-a/one.pdf", "file")]
    store.put_bytes("station-b/dossier-7/READY", b"")
    drops, waiting = inbox.scan(store)
    assert waiting == 1 and len(drops) == 2
    folder = next(d for d in drops if d.kind == "folder")
    assert folder.station == "station-b" and folder.files == ["station-b/dossier-7/0001.png", "station-b/dossier-7/0002.png"]


def test_the_ledger_takes_each_version_once(store, work):
    store.put_bytes("station-a/one.pdf", b"%PDF-1")
    (drop,), _ = inbox.scan(store)
    assert inbox.take(store, drop, "run-1", work) and not inbox.take(store, drop, "run-2", work)
    assert inbox.taken(store, work) == {drop.ident}
    store.put_bytes("station-a/one.pdf", b"%PDF-2 other bytes")  # written again: a new version, a new drop
    (again,), _ = inbox.scan(store)
    assert again.ident != drop.ident and again.ident not in inbox.taken(store, work)


def test_a_watcher_that_fails_backs_off_and_loses_nothing(store, work):
    store.put_bytes("station-a/one.pdf", b"%PDF-1")
    store.put_bytes("station-a/two.pdf", b"%PDF-2")
    calls, pauses = [], []

    def flaky_submit(drop, attempt=1):
        calls.append(drop.key)
        if len(calls) == 2:
            raise ConnectionError("Prefect API unreachable")
        return f"run-{drop.key}"

    heartbeat = inbox.watch(store, flaky_submit, poll_s=1, max_scans=3, sleep=pauses.append, work=work)
    assert heartbeat.errors == 1 and "unreachable" in heartbeat.last_error
    assert pauses[0] == 2.0  # backoff doubles the poll interval
    assert sorted(e.drop.key for e in inbox.ledger(store, work)) == ["station-a/one.pdf", "station-a/two.pdf"]
    assert calls.count("station-a/two.pdf") == 2  # submitted again after the failure, recorded once
    assert inbox.status(store, work)["new"] == []


def test_settling_moves_after_copying_and_quarantines_with_a_reason(store):
    store.put_bytes("station-a/ok.pdf", b"%PDF-ok")
    store.put_bytes("station-a/bad.pdf", b"not a pdf")
    drops, _ = inbox.scan(store)
    good, bad = sorted(drops, key=lambda d: d.key != "station-a/ok.pdf")
    done, kept = inbox.moved_key(inbox.DONE, good, good.key), inbox.moved_key(inbox.QUARANTINE, bad, bad.key)
    assert inbox.settle(store, good, "passed") == [done]
    assert inbox.settle(store, bad, "refused", {"code": "unsupported_type"}) == [kept]
    assert store.get_bytes(done) == b"%PDF-ok"
    reason = json.loads(store.get_bytes(kept + ".reason.json"))
    assert reason["code"] == "unsupported_type" and reason["status"] == "refused"
    assert not store.exists("station-a/ok.pdf") and not store.exists("station-a/bad.pdf")
    assert inbox.settle(store, good, "passed") == []  # a retry after the move is harmless


@pytest.mark.parametrize("key,name", [("s/đơn xin.pdf", "đơn xin.pdf"), ("s/a\x07b.pdf", "input.pdf"),
                                      ("s/" + "x" * 300 + ".tif", "input.tif"), ("s/..", "input")])
def test_downloaded_names_are_harmless(key, name):
    assert inbox.local_name(key) == name


# --- the service: watcher, deployments, two workers, a real S3 inbox ----------------------------


def _sohoa(stack: Stack, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "sohoa"), *args], env=stack.env, capture_output=True, text=True, **kwargs)


def _watcher(stack: Stack, url: str, archive: Path) -> subprocess.Popen:
    log = open(stack.logs / f"watch-{time.monotonic_ns()}.log", "w")
    return subprocess.Popen([str(BIN / "sohoa"), "watch", url, "--archive", str(archive), "--poll", "1"], env=stack.env,
                            stdout=log, stderr=subprocess.STDOUT)


def _runs(stack: Stack) -> list[dict]:
    runs = stack.post("/flow_runs/filter", {"flow_runs": {"name": {}}, "limit": 200})
    return [r for r in runs if r["idempotency_key"] and r["idempotency_key"].startswith("sohoa-drop-")]


def _runs_by_drop(stack: Stack) -> dict[str, list[dict]]:
    """The runs of each drop (``sohoa-drop-<id>`` and ``sohoa-drop-<id>-<attempt>``)."""
    grouped: dict[str, list[dict]] = {}
    for run in _runs(stack):
        grouped.setdefault(run["idempotency_key"].split("-")[2], []).append(run)
    return grouped


def _finished_once(runs: list[dict]) -> bool:
    """One run finished the drop; any other crashed before it ever ran."""
    done = [r for r in runs if r["state_name"] in ("Completed", "Suspended")]
    return len(done) == 1 and all(r["state_type"] == "CRASHED" and r["run_count"] == 0 for r in runs if r not in done)


def _submit_again(stack: Stack, url: str, archive: Path, entry: inbox.LedgerEntry) -> str:
    """What a watcher restarted between starting a run and recording it does: start it again."""
    code = ("import sys; from sohoa.orchestration.inbox import submit; from sohoa.services.inbox import Drop; "
            "print(submit(sys.argv[1], sys.argv[2], None)(Drop.model_validate_json(sys.argv[3])))")
    done = subprocess.run([str(BIN / "python"), "-c", code, url, str(archive), entry.drop.model_dump_json()],
                          env=stack.env, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def _done(store, key: str) -> bool:
    """The drop of ``key`` was moved to done/ (under its drop's id)."""
    return any(info.key.endswith("/" + key) for info in store.list(inbox.DONE))


def _drop(store, files: Path, seed: int) -> None:
    store.put_file(f"station-{'ab'[seed % 2]}/{seed:02d}.pdf", files / f"{seed:02d}.pdf")


@pytest.mark.slow
def test_twelve_drops_from_two_stations_are_archived_exactly_once(tmp_path, s3_env):
    files, codes = tmp_path / "scans", set()
    procedures = sorted(synth.PROCEDURES)
    short = ["phieu_tiep_nhan", "can_cuoc"]  # two pages each, so that OCR does not dominate; incomplete: they need review
    for seed in range(10):  # ten one-file dossiers, a folder, and a copy: twelve drops
        codes.add(synth.make_dossier(files / f"{seed:02d}.pdf", procedure=procedures[seed % 3], seed=100 + seed,
                                     include=short).dossier_code)
    codes.add(synth.make_dossier(files / "folder", procedure="1.001193", seed=200, fmt="png-dir", include=short).dossier_code)
    url, archive = f"s3://inbox-{uuid.uuid4().hex[:8]}", tmp_path / "archive"
    store = open_store(url)
    store.ensure_ready()
    stack = Stack(tmp_path / "stack").start({"SOHOA_OCR_CONCURRENCY": "ocr"})  # and the S3 server's (s3_env)
    work = open_store(stack.env["SOHOA_WORK"])  # the ledger's store
    work.ensure_ready()
    try:
        limit = subprocess.run([*PREFECT, "gcl", "create", "ocr", "--limit", "2"], env=stack.env, capture_output=True,
                               text=True)
        assert limit.returncode == 0, limit.stdout + limit.stderr  # one OCR budget shared by both workers
        for seed in range(6):  # the first half, then the watcher (no worker yet: the runs wait, Scheduled)
            _drop(store, files, seed)
        watcher = _watcher(stack, url, archive)
        wait(lambda: len(inbox.taken(store, work)) >= 6, 120, "the watcher to take the first drops")
        watcher.send_signal(signal.SIGKILL)  # killed midway: no goodbye
        watcher.wait()
        first = inbox.ledger(store, work)[0]
        assert _submit_again(stack, url, archive, first) == first.flow_run_id  # idempotent per drop
        # the worker's submission got HTTP 503: the run ends Crashed before it ever ran
        stack.post(f"/flow_runs/{first.flow_run_id}/set_state", {"state": {"type": "CRASHED", "name": "Crashed"},
                                                                   "force": True})
        workers = [stack.start_worker(limit=1), stack.start_worker(limit=1)]

        for seed in range(6, 10):
            _drop(store, files, seed)
        for page in sorted((files / "folder").iterdir()):  # a multi-file dossier, its marker last
            store.put_file(f"station-b/folder-200/{page.name}", page)
        store.put_bytes("station-b/folder-200/READY", b"")
        watcher = _watcher(stack, url, archive)
        wait(lambda: not store.exists("station-b/03.pdf"), 300, "dossier 03 to be archived")
        store.put_file("station-a/03-again.pdf", files / "03.pdf")  # the same file dropped twice
        wait(lambda: len(inbox.taken(store, work)) >= 12, 120, "the restarted watcher to catch up")
        wait(lambda: not [i.key for i in store.list("station-")], 600,
             f"every drop to be archived and moved out of the inbox (see {stack.logs})")
        watcher.terminate()
        watcher.wait()
        status = json.loads(_sohoa(stack, "watch", url, "--status").stdout)
        # every drop's run finished (a dossier that needs a person waits Suspended, its input archived and moved
        # out); a run that crashed before it started (ours, and any whose submission got a 503) was submitted again
        wait(lambda: all(_finished_once(d) for d in _runs_by_drop(stack).values()), 60, "every run to finish")
        runs, by_drop = _runs(stack), _runs_by_drop(stack)
        crashed = stack.flow_run(first.flow_run_id)
        report = json.loads(_sohoa(stack, "report", "--archive", str(archive), "--inbox", url, "--format", "json").stdout)

        # an operator reruns one dossier from the verify step: earlier steps come from the work store
        code = sorted(codes)[0]
        rerun = stack.run("reprocess/reprocess", dossier_ids=[code], from_step="verify", archive=str(archive))
        stack.wait_state(rerun, {"Completed"}, 240)
        reprocessed = json.loads((dossier_dir(archive, code) / "manifest.json").read_text())

        ranked = stack.run("digitization-report/digitization-report", archive=str(archive), inbox=url)
        stack.wait_state(ranked, {"Completed"}, 120)
        tables = stack.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [ranked]}}})

        # the watcher as a deployment (what an operator schedules instead of `sohoa watch`)
        store.put_file("station-a/late.pdf", files / "05.pdf")  # same bytes as 05: a duplicate
        watching = stack.run("watch-inbox/watch-inbox", inbox=url, archive=str(archive), poll_s=1, max_scans=2)
        stack.wait_state(watching, {"Completed"}, 120)
        wait(lambda: _done(store, "station-a/late.pdf"), 120, "the late drop to be taken and settled")
        taken_at_end = inbox.taken(store, work)
        resubmitted = inbox.entry_of(store, first.drop, work)
    finally:
        stack.stop()
    assert reprocessed["revision"] == 2 and (dossier_dir(archive, code) / "history" / "manifest-0001.json").exists()
    assert {n: s["cached"] for n, s in reprocessed["steps"].items() if n != "archive"} == {
        "capture": True, "ocr": True, "classify": True, "verify": False}
    by_station = {}
    for row in report:
        for name in ("received", "archived", "duplicates"):
            by_station.setdefault(row["station"], {}).setdefault(name, 0)
            by_station[row["station"]][name] += row[name]
    assert by_station == {"station-a": {"received": 6, "archived": 5, "duplicates": 1},
                          "station-b": {"received": 6, "archived": 6, "duplicates": 0}}
    assert all(r["median_drop_to_archive_s"] is not None for r in report)
    assert [t["key"] for t in tables] == ["digitization-report"]
    assert json.loads(tables[0]["data"])[-1]["received"] == 12  # the total row of the table artifact
    assert len(list((archive / "reports").glob("digitization-month-*.csv"))) == 1
    assert sum(r["needs_review"] for r in report) == 11  # incomplete dossiers: archived, moved out, waiting for a person
    manifests = list(archive.glob("dossiers/*/*/*/*/manifest.json"))  # agency / procedure / year / dossier
    assert sorted(p.parent.name for p in manifests) == sorted(codes)  # 11 dossiers, 12 drops: one archive each
    assert all(json.loads(p.read_text())["revision"] == 1 for p in manifests if code not in str(p))
    assert _done(store, "station-a/03-again.pdf") and _done(store, "station-b/folder-200/READY")
    assert status["taken"] == 12 and status["new"] == [] and status["quarantined"] == 0 and status["done"] == 14
    assert len(taken_at_end) == 13
    # the run that never ran was submitted again, under a key of its own, and that run archived the drop
    assert (crashed["state_type"], crashed["run_count"]) == ("CRASHED", 0)
    assert resubmitted.attempt == 2 and resubmitted.flow_run_id != first.flow_run_id
    assert len({r["idempotency_key"] for r in runs}) == len(runs) >= 13  # each attempt a key of its own
    assert len(by_drop) == 12 and all(_finished_once(d) for d in by_drop.values())  # one run per drop that ran
    pids = {r["infrastructure_pid"].split(":")[1] for r in runs if r["infrastructure_pid"]}
    assert pids == {str(w.pid) for w in workers}  # both workers took runs
