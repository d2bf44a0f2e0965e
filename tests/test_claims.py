"""The claim on an input's content (sohoa/services/claims.py): one holder at a time, waited for, taken over
when its holder dies, renewed through a failing store until its lease ends, and raced for by several takers of
whom exactly one wins, on a local folder and on S3; and two real ``sohoa run`` of one file at once."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sohoa_dev import synth

from sohoa.services import claims
from sohoa.services.claims import Claim, ClaimSettings, ClaimTimeout, Held
from sohoa.storage import StorageUnavailable, open_store
from tests.s3_fixtures import ready_store
from tests.test_faults import prefect_api  # noqa: F401 (a fixture: one Prefect API server for the commands)

SHA = "ab" * 32
QUICK = ClaimSettings(renew_s=0.1, expiry_s=30.0, wait_s=30.0, poll_s=0.05)
NO_WAIT = QUICK.model_copy(update={"wait_s": 0.0})


@pytest.fixture
def store(tmp_path):
    folder = open_store(tmp_path / "archive")
    folder.ensure_ready()
    return folder


def written(store, generation: int = 1) -> Claim:
    return Claim.model_validate_json(store.get_bytes(f"claims/{SHA}/{generation:08d}.json"))


def generations(store) -> list[str]:
    return [info.key.rsplit("/", 1)[-1] for info in store.list(f"claims/{SHA}/")]


def until(condition, within_s: float = 10.0) -> bool:
    """Whether ``condition`` came true within ``within_s`` (a loaded machine may stall a write for seconds)."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def plant(store, holder: claims.Holder, expires_in_s: float = 60.0) -> None:
    """A claim at generation 1 held by ``holder``, as that process would have written it."""
    now = datetime.now(UTC)
    claim = Claim(sha256=SHA, generation=1, holder=holder, taken_at=now, expires_at=now + timedelta(seconds=expires_in_s))
    store.put_bytes(f"claims/{SHA}/00000001.json", claim.model_dump_json().encode(), create_only=True)


def elsewhere() -> claims.Holder:
    """A holder on another machine: only its lease can say it is gone."""
    return claims.holder().model_copy(update={"host": "may-2", "node": "may-2/boot/pid:[1]", "pid": 4242})


def test_a_claim_names_its_holder_is_renewed_while_held_and_released(store):
    held = claims.take(store, SHA, claims.holder("run-7"), QUICK)
    first = written(store)
    assert first.holder.pid > 0 and first.holder.flow_run_id == "run-7" and not first.released
    assert until(lambda: written(store).expires_at > first.expires_at)  # renewed from its thread
    held.release()
    held.release()
    assert written(store).released and generations(store) == ["00000001.json"]
    again = claims.take(store, SHA, claims.holder(), NO_WAIT)  # a released claim is taken at once, one generation up
    again.release()
    assert generations(store) == ["00000001.json", "00000002.json"]


def test_a_second_taker_waits_for_the_live_holder_saying_so_then_holds(store, caplog):
    first = claims.take(store, SHA, claims.holder(), QUICK)
    threading.Timer(0.4, first.release).start()
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="sohoa.claims"):
        with claims.take(store, SHA, claims.holder(), QUICK) as second:
            assert second.claim.generation == 2 and time.monotonic() - started >= 0.35
    assert f"processing the same content (sha256 {SHA[:12]})" in caplog.text and f"pid {first.claim.holder.pid}" in caplog.text
    assert written(store, 2).released


def test_waiting_is_bounded(store):
    plant(store, elsewhere())
    with pytest.raises(ClaimTimeout, match=r"waited 0 s for pid 4242 on may-2"):
        claims.take(store, SHA, claims.holder(), NO_WAIT)
    assert generations(store) == ["00000001.json"]


def test_a_claim_whose_lease_expired_is_taken_over(store, caplog):
    plant(store, elsewhere(), expires_in_s=-1)
    with caplog.at_level(logging.WARNING, logger="sohoa.claims"), claims.take(store, SHA, claims.holder(), NO_WAIT) as held:
        assert held.claim.generation == 2
    assert "took over the claim" in caplog.text and "lease expired" in caplog.text


def test_a_claim_whose_process_on_this_machine_died_is_taken_over_before_its_lease_ends(store, caplog):
    """A real holder process, killed with SIGKILL: it never released, its lease has a minute left."""
    script = ("import sys, time; from sohoa.services import claims; from sohoa.storage import open_store;"
              f"claims.take(open_store(sys.argv[1]), '{SHA}', claims.holder(), claims.ClaimSettings(expiry_s=60));"
              "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", script, store.url], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ClaimTimeout):  # alive: it holds
        claims.take(store, SHA, claims.holder(), NO_WAIT)
    holder.kill()
    holder.wait()
    with caplog.at_level(logging.WARNING, logger="sohoa.claims"), claims.take(store, SHA, claims.holder(), NO_WAIT) as held:
        assert held.claim.generation == 2
    assert f"from pid {holder.pid}" in caplog.text and "that process is gone" in caplog.text


def test_a_claim_this_process_let_go_without_the_store_hearing_of_it_is_taken_at_once(store, monkeypatch):
    held = claims.take(store, SHA, claims.holder(), QUICK)
    monkeypatch.setattr(held, "_write", lambda *_args: None)  # the store went away as the run failed
    held.release()
    assert not written(store).released
    with claims.take(store, SHA, claims.holder(), NO_WAIT) as again:  # the retry, in the same process
        assert again.claim.generation == 2


def test_a_failure_lets_go_at_once_even_when_the_store_hangs(store, monkeypatch):
    held = claims.take(store, SHA, claims.holder(), QUICK)
    answers, put = threading.Event(), store.put_bytes

    def hanging(*args, **kwargs):
        if not kwargs.get("create_only"):
            answers.wait(10)  # renewals and releases hang until the store answers again
        return put(*args, **kwargs)

    monkeypatch.setattr(store, "put_bytes", hanging)
    started = time.monotonic()
    with pytest.raises(RuntimeError), held:
        raise RuntimeError("the archive step failed")
    assert time.monotonic() - started < 1
    with claims.take(store, SHA, claims.holder(), NO_WAIT) as retry:  # a retry in this process goes on at once
        assert retry.claim.generation == 2
        answers.set()
    assert until(lambda: written(store, 1).released and written(store, 2).released)


def frozen(store, monkeypatch, answers: threading.Event | None = None) -> None:
    """The store stops answering (its client gives up: StorageUnavailable) until ``answers`` is set."""
    exists, put = store.exists, store.put_bytes

    def unavailable(call):
        def failing(*args, **kwargs):
            if answers is None or not answers.is_set():
                raise StorageUnavailable("storage unavailable: no answer within 0.1 s", store.url)
            return call(*args, **kwargs)
        return failing

    monkeypatch.setattr(store, "exists", unavailable(exists))
    monkeypatch.setattr(store, "put_bytes", unavailable(put))


def test_a_holder_whose_store_freezes_keeps_renewing_until_its_lease_ends_then_says_it_lost_it(store, monkeypatch,
                                                                                              caplog):
    held = claims.take(store, SHA, claims.holder(), ClaimSettings(renew_s=0.05, expiry_s=0.5))
    frozen(store, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="sohoa.claims"):
        assert until(lambda: held.lost)
        held._renewer.join(timeout=5)
    assert not held._renewer.is_alive()  # it stopped renewing, without an uncaught error
    failures = [r.getMessage() for r in caplog.records if "trying again until its lease ends" in r.getMessage()]
    assert failures and all("\n" not in line for line in failures)
    assert "is lost: its lease ended" in caplog.text and "another run may take it over" in caplog.text
    held.release()
    assert not written(store).released  # the store never heard: the lease ran out on its own


def test_a_holder_whose_store_answers_again_within_its_lease_keeps_it(store, monkeypatch):
    held = claims.take(store, SHA, claims.holder(), ClaimSettings(renew_s=0.05, expiry_s=5))
    first, answers = written(store), threading.Event()
    frozen(store, monkeypatch, answers)
    time.sleep(0.3)  # a few renewals fail
    answers.set()
    assert until(lambda: written(store).expires_at > first.expires_at)
    assert not held.lost and held._renewer.is_alive()
    held.release()
    assert written(store).released


def test_a_release_under_way_is_not_taken_for_a_holder_that_is_gone(store, monkeypatch):
    """Two runs in one process: until the store has the release, the second waits; taking the claim over then
    (its holder looked gone) let the first's last renewal see a takeover and leave its claim unreleased."""
    held = claims.take(store, SHA, claims.holder(), QUICK)
    writing, go_on, put = threading.Event(), threading.Event(), store.put_bytes

    def slow_release(key, data, **kwargs):
        if b'"released":true' in data:
            writing.set()
            go_on.wait(10)
        return put(key, data, **kwargs)

    monkeypatch.setattr(store, "put_bytes", slow_release)
    releasing = threading.Thread(target=held.release)
    releasing.start()
    assert writing.wait(10)
    assert claims._free(written(store)) is None  # still held: a second run waits
    go_on.set()
    releasing.join(10)
    assert written(store).released and claims._free(written(store)) == "released"


def test_a_reused_pid_is_another_process(store):
    plant(store, claims.holder().model_copy(update={"started": "1"}))  # this pid, but started at another time
    with claims.take(store, SHA, claims.holder(), NO_WAIT) as held:
        assert held.claim.generation == 2


@pytest.fixture(params=["local", "s3"])
def any_store(request, tmp_path):
    return ready_store(request, tmp_path, request.param)[0]


def test_of_several_takers_of_a_dead_claim_exactly_one_wins(any_store, monkeypatch):
    """Every taker sees the same dead claim before any of them writes: create-only lets one through."""
    plant(any_store, elsewhere(), expires_in_s=-1)
    takers = 6
    seen, highest = threading.Barrier(takers), claims._highest
    looked: set[int] = set()

    def all_see_it_dead(store, sha256):
        found = highest(store, sha256)
        if threading.get_ident() not in looked:
            looked.add(threading.get_ident())
            seen.wait(timeout=10)
        return found

    monkeypatch.setattr(claims, "_highest", all_see_it_dead)
    won: list[Held] = []
    lost: list[ClaimTimeout] = []

    def take() -> None:
        try:
            won.append(claims.take(any_store, SHA, claims.holder(), NO_WAIT))
        except ClaimTimeout as timeout:
            lost.append(timeout)

    threads = [threading.Thread(target=take) for _ in range(takers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(won) == 1 and len(lost) == takers - 1
    assert generations(any_store) == ["00000001.json", "00000002.json"]
    assert written(any_store, 2).holder.token == won[0].claim.holder.token
    won[0].release()


def test_a_holder_that_lost_its_claim_does_not_release_the_new_one(store):
    """It stalled past its lease (its renewal comes too late) and another run took the claim over."""
    held = claims.take(store, SHA, claims.holder(), ClaimSettings(renew_s=600, expiry_s=1200))
    taken = held.claim.model_copy(update={"generation": 2, "holder": elsewhere()})
    store.put_bytes(f"claims/{SHA}/00000002.json", taken.model_dump_json().encode(), create_only=True)
    held._renew()
    assert held.lost
    held.release()
    assert not written(store, 2).released and not written(store, 1).released


def test_the_lease_must_outlast_two_renewals():
    with pytest.raises(ValueError, match="at least twice"):
        ClaimSettings(renew_s=30, expiry_s=40)


def held_tesseract(tesseract: str, gate: Path) -> Path:
    """``tesseract`` that reads no page until ``gate`` exists (at most 120 s): the first run's OCR waits there."""
    wrapper = gate.with_name("held-tesseract")
    wrapper.write_text(f'#!/bin/sh\ncase "$*" in *--psm*) i=0; while [ ! -e "{gate}" ] && [ $i -lt 1200 ]; do'
                       f' sleep 0.1; i=$((i+1)); done;; esac\nexec "{tesseract}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def sohoa_run(path: Path, tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen, list[str]]:
    """``sohoa run --json -q PATH`` on the test's archive and work folders, its stderr read as it comes."""
    process = subprocess.Popen([str(Path(sys.executable).parent / "sohoa"), "run", "--json", "-q", str(path),
                                "--archive", str(tmp_path / "archive"), "--work", str(tmp_path / "work")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    said: list[str] = []
    threading.Thread(target=lambda: said.extend(process.stderr), daemon=True).start()
    return process, said


@pytest.mark.slow
def test_two_sohoa_run_of_one_file_at_once_read_it_once(prefect_api, counting_tesseract, tmp_path):  # noqa: F811
    """Two real ``sohoa run`` processes of one file, one archive and work folder: the first to hold the claim has
    its OCR held until the other says it waits for it; then one passes, the other is its duplicate, and each
    page was read once. (Before the claim both passed, each reading every page.)"""
    path = tmp_path / "ket-hon.pdf"
    truth = synth.make_dossier(path, procedure="1.000894", seed=5, include=["phieu_tiep_nhan", "to_khai_ket_hon"])
    tesseract, log = counting_tesseract
    gate = tmp_path / "bin" / "go"
    env = {"PREFECT_API_URL": prefect_api, "SOHOA_OCR_ENGINE": "cli", "SOHOA_TESSERACT_CMD": str(held_tesseract(tesseract, gate)),
           "PREFECT_LOGGING_LEVEL": "INFO"}  # -q but the run log at INFO: the waiting run says so
    runs = [sohoa_run(path, tmp_path, env) for _ in range(2)]
    try:
        assert until(lambda: any("processing the same content" in line for _, said in runs for line in said), 90), \
            [said for _, said in runs]
    finally:
        gate.touch()
    lines = []
    for process, said in runs:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0, said
        lines += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    passed, duplicate = sorted(lines, key=lambda line: line["status"] != "passed")
    assert (passed["status"], duplicate["status"]) == ("passed", "duplicate"), lines
    assert duplicate["dossier_id"] == passed["dossier_id"] == truth.dossier_code
    assert duplicate["manifest"] == passed["manifest"]
    assert len(list((tmp_path / "work").glob("ocr/*/searchable.pdf"))) == 1  # one OCR result in the work store
    assert sum("--psm" in line for line in log.read_text().splitlines()) == len(truth.pages)  # each page read once
