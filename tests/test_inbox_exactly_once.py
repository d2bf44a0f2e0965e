"""Every drop's bytes archived or quarantined, once, on a real S3 server: a run reads and moves only the
version its drop recorded, keys no drop can be made of are quarantined, a re-upload is a new drop, the
ledger is out of the stations' reach, runs that never ran are submitted again, one bad outcome does not
hide the others. (The watcher and worker on a real Prefect server: tests/test_inbox.py.)"""

from __future__ import annotations

import io
import logging
import json
import threading
import time
import uuid

import pytest

from sohoa.services import inbox
from sohoa.storage import ObjectChanged, ObjectNotFound, open_store


@pytest.fixture
def store(s3_env):
    store = open_store(f"s3://inbox-{uuid.uuid4().hex[:8]}")
    store.ensure_ready()
    return store


@pytest.fixture
def work(tmp_path):
    work = open_store(str(tmp_path / "work"))
    work.ensure_ready()
    return work


class Orchestrator:
    """Stands in for Prefect: one run id per (drop, attempt), as idempotency keys give; states set by the test."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, int]] = []
        self.state: dict[str, inbox.RunState] = {}

    def __call__(self, drop: inbox.Drop, attempt: int = 1) -> str:
        self.submitted.append((drop.key, attempt))
        run = f"run-{drop.ident}-{attempt}"
        self.state.setdefault(run, inbox.RunState(flow_run_id=run, state="SCHEDULED"))
        return run

    def states(self, flow_run_ids: list[str]) -> dict[str, inbox.RunState]:
        return {i: self.state[i] for i in flow_run_ids if i in self.state}

    def crash(self, run: str) -> None:
        self.state[run] = inbox.RunState(flow_run_id=run, state="CRASHED", run_count=0)


def _scan(store, work, submitter, heartbeat=None) -> list[inbox.Drop]:
    return inbox.scan_once(store, submitter, heartbeat or inbox.Heartbeat(at="", scans=0, objects=0, taken=0, waiting=0),
                           work)


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_reads_copies_and_deletes_act_on_the_version_asked_for(kind, request, tmp_path):
    from tests.s3_fixtures import ready_store

    store, _ = ready_store(request, tmp_path, kind)
    v1 = store.put_bytes("s/a.pdf", b"version 1")
    time.sleep(0.01)  # a local etag is size and mtime
    v2 = store.put_bytes("s/a.pdf", b"version 2!")
    for act in (lambda: store.get_bytes("s/a.pdf", if_match=v1.etag),
                lambda: store.get_file("s/a.pdf", tmp_path / "out", if_match=v1.etag),
                lambda: store.copy("s/a.pdf", "d/a.pdf", if_match=v1.etag),
                lambda: store.delete("s/a.pdf", if_match=v1.etag)):
        with pytest.raises(ObjectChanged):
            act()
    assert store.get_bytes("s/a.pdf") == b"version 2!" and not store.exists("d/a.pdf") and not (tmp_path / "out").exists()
    assert store.get_bytes("s/a.pdf", if_match=v2.etag) == b"version 2!"
    store.copy("s/a.pdf", "d/a.pdf", if_match=v2.etag)
    store.delete("s/a.pdf", if_match=v2.etag)
    assert not store.exists("s/a.pdf") and store.get_bytes("d/a.pdf") == b"version 2!"
    store.delete("s/a.pdf", if_match=v2.etag)  # gone already: still not an error


def test_a_key_written_twice_within_seconds_loses_no_version(store, work, tmp_path):
    store.put_bytes("quay-1/a.pdf", b"%PDF- version 1")
    (v1,), _ = inbox.scan(store)
    fetched = inbox.fetch(store, v1, tmp_path / "v1")  # v1's run has its bytes ...
    store.put_bytes("quay-1/a.pdf", b"%PDF- version 2, other bytes")  # ... when the station writes again
    (v2,), _ = inbox.scan(store)
    assert v2.ident != v1.ident
    # v1 archived: moved from the bytes its run read; version 2 is left alone for its own drop
    assert inbox.settle(store, v1, "archived", local=inbox.local_paths(v1, tmp_path / "v1")) == [
        inbox.moved_key(inbox.DONE, v1, "quay-1/a.pdf")]
    assert fetched.read_bytes() == b"%PDF- version 1"
    assert store.get_bytes("quay-1/a.pdf") == b"%PDF- version 2, other bytes"
    inbox.fetch(store, v2, tmp_path / "v2")
    inbox.settle(store, v2, "archived")
    assert [store.get_bytes(inbox.moved_key(inbox.DONE, d, "quay-1/a.pdf")) for d in (v1, v2)] == [
        b"%PDF- version 1", b"%PDF- version 2, other bytes"]  # done/ holds both
    assert not store.exists("quay-1/a.pdf")
    assert inbox.fetch(store, v1, tmp_path / "again").read_bytes() == b"%PDF- version 1"  # a resumed run: from done/


def test_a_version_written_over_before_its_run_read_it_is_reported_never_answered_with_the_other(store, tmp_path):
    store.put_bytes("quay-1/b.pdf", b"%PDF- version 1")
    (v1,), _ = inbox.scan(store)
    store.put_bytes("quay-1/b.pdf", b"%PDF- version 2")
    with pytest.raises(ObjectChanged, match="written again"):
        inbox.fetch(store, v1, tmp_path / "v1")
    assert inbox.settle(store, v1, "refused", {"code": "corrupt_file"}) == []  # and v1's refusal cannot move v2
    assert store.get_bytes("quay-1/b.pdf") == b"%PDF- version 2"
    said = inbox.gone(store, v1, "overwritten")  # what the run returns says the same as the recorded outcome
    assert (said.status, said.reason.code, said.input) == ("refused", "superseded", store.url_for("quay-1/b.pdf"))
    (outcome,) = inbox.outcomes(store)
    assert (outcome.drop.ident, outcome.status, outcome.reason) == (v1.ident, "refused", "superseded")
    (v2,), _ = inbox.scan(store)
    inbox.settle(store, v2, "archived")  # version 2 processed and moved out before version 1's run starts
    with pytest.raises(ObjectNotFound, match="is gone"):
        inbox.fetch(store, v1, tmp_path / "later")


def test_keys_no_drop_can_be_made_of_are_quarantined_with_a_reason(store, work):
    hostile = ["quay-1//x.pdf", "/lead.pdf", "quay-1/new\nline.pdf", "quay-1/bell\x07.pdf", "top-level.pdf"]
    for key in hostile:
        store._client.put_object(store.bucket, store.prefix + key, io.BytesIO(b"%PDF-1.4"), 8)
    store.put_bytes("quay-1/ok.pdf", b"%PDF-ok")
    orchestrator, heartbeat = Orchestrator(), inbox.Heartbeat(at="", scans=0, objects=0, taken=0, waiting=0)
    new = _scan(store, work, orchestrator, heartbeat)
    assert [d.key for d in new] == ["quay-1/ok.pdf"] and heartbeat.quarantined == len(hostile)
    left = [o.object_name for o in store._client.list_objects(store.bucket, recursive=True)
            if not o.object_name.startswith(inbox.SYSTEM)]
    assert left == ["quay-1/ok.pdf"]  # none of them stays in the inbox
    reasons = [json.loads(store.get_bytes(i.key)) for i in store.list(inbox.QUARANTINE) if i.key.endswith(".reason.json")]
    assert sorted(r["key"] for r in reasons) == sorted(hostile) and {r["code"] for r in reasons} == {"bad_name"}
    outcomes = inbox.outcomes(store)
    assert sorted(o.drop.key for o in outcomes) == sorted(hostile) and {o.reason for o in outcomes} == {"bad_name"}
    assert _scan(store, work, orchestrator) == [] and len(inbox.outcomes(store)) == len(hostile)  # once each


def test_the_same_bytes_uploaded_again_after_processing_are_a_new_drop(store, work):
    orchestrator = Orchestrator()
    store.put_bytes("quay-1/c.pdf", b"%PDF- same bytes")
    (first,) = _scan(store, work, orchestrator)
    inbox.settle(store, first, "passed")
    time.sleep(0.01)
    store.put_bytes("quay-1/c.pdf", b"%PDF- same bytes")  # the station sends it again
    (again,) = _scan(store, work, orchestrator)
    assert again.version == first.version and again.ident != first.ident
    assert inbox.taken(store, work) == {first.ident, again.ident}


def test_a_ledger_entry_forged_in_the_inbox_does_not_stop_a_drop(store, work):
    store.put_bytes("quay-1/d.pdf", b"%PDF- d")
    (drop,), _ = inbox.scan(store)
    forged = inbox.LedgerEntry(drop=drop, taken_at="2026-01-01T00:00:00+00:00", flow_run_id="forged")
    for key in (f"_sohoa/ledger/{drop.ident}.json", f"inboxes/x/ledger/{drop.ident}.json"):
        store.put_bytes(key, forged.model_dump_json().encode())
    orchestrator = Orchestrator()
    assert [d.ident for d in _scan(store, work, orchestrator)] == [drop.ident]
    assert orchestrator.submitted == [("quay-1/d.pdf", 1)] and inbox.taken(store, work) == {drop.ident}


def test_a_run_that_never_ran_is_submitted_again_then_quarantined(store, work):
    orchestrator = Orchestrator()
    store.put_bytes("quay-1/e.pdf", b"%PDF- e")
    (drop,) = _scan(store, work, orchestrator)
    assert _scan(store, work, orchestrator) == [] and orchestrator.submitted == [("quay-1/e.pdf", 1)]  # scheduled
    for attempt in range(1, inbox.MAX_ATTEMPTS):
        orchestrator.crash(f"run-{drop.ident}-{attempt}")  # the worker's submission got a 503
        heartbeat = inbox.Heartbeat(at="", scans=0, objects=0, taken=0, waiting=0)
        _scan(store, work, orchestrator, heartbeat)
        assert orchestrator.submitted[-1] == ("quay-1/e.pdf", attempt + 1) and heartbeat.resubmitted == 1
        assert inbox.ledger(store, work)[0].attempt == attempt + 1
    orchestrator.crash(f"run-{drop.ident}-{inbox.MAX_ATTEMPTS}")
    _scan(store, work, orchestrator)
    assert len(orchestrator.submitted) == inbox.MAX_ATTEMPTS  # bounded: no further submission
    assert not store.exists("quay-1/e.pdf")
    reason = json.loads(store.get_bytes(inbox.moved_key(inbox.QUARANTINE, drop, "quay-1/e.pdf") + ".reason.json"))
    assert reason["code"] == "never_started" and "CRASHED" in reason["message"]
    assert [(o.status, o.reason) for o in inbox.outcomes(store)] == [("failed", "never_started")]


def test_a_run_that_moves_its_drop_while_the_watcher_looks_is_not_submitted_again(store, work):
    store.put_bytes("quay-1/f.pdf", b"%PDF- f")
    (drop,), _ = inbox.scan(store)

    class Finishing(Orchestrator):
        def states(self, flow_run_ids):  # listed in the inbox, then moved and finished before the watcher asks
            inbox.settle(store, drop, "passed")
            return {i: inbox.RunState(flow_run_id=i, state="COMPLETED", run_count=1) for i in flow_run_ids}

    orchestrator = Finishing()
    _scan(store, work, orchestrator)
    _scan(store, work, orchestrator)
    assert orchestrator.submitted == [("quay-1/f.pdf", 1)]


def test_the_heartbeat_is_written_while_a_long_scan_submits(store, work, monkeypatch):
    monkeypatch.setattr(inbox, "BEAT_EVERY_S", 0.0)
    monkeypatch.setattr(inbox, "SUBMITTERS", 1)  # one at a time: the order of the beats is known
    for n in range(3):
        store.put_bytes(f"quay-1/{n}.pdf", b"%%PDF-%d" % n)
    seen = []

    class Slow(Orchestrator):
        def __call__(self, drop, attempt=1):
            if store.exists(inbox.HEARTBEAT):
                seen.append(json.loads(store.get_bytes(inbox.HEARTBEAT))["busy"])
            return super().__call__(drop, attempt)

    _scan(store, work, Slow())
    assert seen == ["submitting 1/3", "submitting 2/3"]
    assert json.loads(store.get_bytes(inbox.HEARTBEAT))["busy"] is None and inbox.status(store, work)["heartbeat"]


def test_one_garbage_outcome_is_skipped_and_named(store, caplog):
    store.put_bytes("quay-1/h.pdf", b"%PDF- h")
    (drop,), _ = inbox.scan(store)
    inbox.record_outcome(store, drop, "duplicate", "000.00.00.H49-261127-0042")
    store.put_bytes(inbox.OUTCOMES + "garbage.json", b"\x00not json")
    store.put_bytes(inbox.OUTCOMES + "wrong.json", b'{"status": 3}')
    found, unreadable = inbox.read_outcomes(store)
    assert [o.drop.ident for o in found] == [drop.ident]
    assert unreadable == [inbox.OUTCOMES + "garbage.json", inbox.OUTCOMES + "wrong.json"]
    with caplog.at_level("WARNING", logger="sohoa.inbox"):
        assert len(inbox.outcomes(store)) == 1
    assert "garbage.json" in caplog.text


def test_drops_are_submitted_several_at_once_and_each_recorded(store, work):
    """Each submission mostly waits for the Prefect API: a scan of many drops keeps several in flight."""
    for n in range(6):
        store.put_bytes(f"quay-1/{n}.pdf", b"%%PDF-%d" % n)
    together = threading.Barrier(3, timeout=10)  # breaks (and the scan raises) unless 3 are in flight at once

    class Waiting(Orchestrator):
        def __call__(self, drop, attempt=1):
            together.wait()
            return super().__call__(drop, attempt)

    orchestrator = Waiting()
    _scan(store, work, orchestrator)
    assert sorted(key for key, _ in orchestrator.submitted) == [f"quay-1/{n}.pdf" for n in range(6)]
    assert len(inbox.ledger(store, work)) == 6


def test_a_drop_over_the_size_limit_is_refused_and_quarantined_without_being_downloaded(store, monkeypatch):
    store.put_bytes("quay-1/huge.pdf", b"%PDF-" + b"0" * 995)
    (drop,), _ = inbox.scan(store)
    assert drop.size == 1000
    assert inbox.too_large(store, drop, 1000) is None  # at the limit: processed as usual
    from sohoa.orchestration import inbox as flows

    def no_download(*_args, **_kwargs):
        raise AssertionError("an input over the limit was downloaded")

    monkeypatch.setattr(flows.inboxes, "fetch", no_download)
    monkeypatch.setattr(flows, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setenv("SOHOA_MAX_INPUT_BYTES", "999")
    outcome = flows.process_drop.fn(store.url, drop)  # the flow's body, without a Prefect run around it
    assert (outcome.status, outcome.reason.code) == ("refused", "too_large")
    assert "1000 bytes; the limit is 999" in outcome.reason.message
    assert not store.exists("quay-1/huge.pdf")
    moved = inbox.moved_key(inbox.QUARANTINE, drop, "quay-1/huge.pdf")
    assert json.loads(store.get_bytes(moved + ".reason.json"))["code"] == "too_large"
    assert [(o.status, o.reason) for o in inbox.outcomes(store)] == [("refused", "too_large")]
