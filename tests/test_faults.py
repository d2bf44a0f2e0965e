"""Fault tolerance, each against the real servers (ministack as a process of its own, Prefect, tesseract):
the S3 server dying while a dossier is archived, the process killed while it reads pages, the same input
submitted twice at once, and a full disk.

Every ``sohoa run`` here is the real command in its own process, talking to one Prefect API server
started for this module (what a deployment has; it saves each command booting its own).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sohoa_dev import synth

from sohoa.domain import layout
from sohoa.kernel.keys import sha256_file
from sohoa.kernel.models import Manifest
from sohoa.kernel.settings import Settings
from sohoa.services.plan import admit
from sohoa.steps.archive import find_archived, source_index_key
from sohoa.storage import open_store

pytestmark = pytest.mark.slow
SOHOA = str(Path(sys.executable).parent / "sohoa")


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[str]:
    """One Prefect API server for the module's commands (the CLI's own embedded server, started once)."""
    from sohoa.orchestration.embedded import EmbeddedServer

    server = EmbeddedServer().start()
    os.environ.pop("PREFECT_API_URL")  # start() exports it for its own process; only the commands get it
    try:
        server.wait(120)
        yield server.api_url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def marriage_pdf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, synth.SynthDossier]:
    """A complete two-page marriage dossier (receipt + declaration): cheap to read, verifies as passed."""
    out = tmp_path_factory.mktemp("faults") / "ket-hon.pdf"
    return out, synth.make_dossier(out, procedure="1.000894", seed=5, include=["phieu_tiep_nhan", "to_khai_ket_hon"])


def start(*args: str, env: dict[str, str], api: str) -> subprocess.Popen:
    """``sohoa ARGS`` in a process group of its own (so that a test can kill it with its children)."""
    return subprocess.Popen([SOHOA, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PREFECT_API_URL": api, **env}, start_new_session=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, list[dict], str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return process.returncode, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def sohoa(*args: str, env: dict[str, str], api: str) -> tuple[int, list[dict], str]:
    return finish(start(*args, env=env, api=api))


def check(archive_url: str, env: dict[str, str]) -> tuple[int, dict]:
    done = subprocess.run([SOHOA, "check", "--json", "--archive", archive_url], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {"stderr": done.stderr}


class Relay:
    """A TCP relay in front of the S3 server that sees each request start, to pull the plug or hold it.

    Before the relay forwards a request that starts with ``request`` (e.g. ``PUT /bucket/archive/dossiers/``),
    it calls ``on_request(n)`` (n: 1 for the first such request): returning False pulls the plug, that
    request is not forwarded, the relay stops listening (connection refused from then on) and every
    open connection is cut. ``on_request`` may also block, to hold a request back. Deterministic: the
    order of the pipeline's requests decides, not timing.
    """

    def __init__(self, upstream_port: int, request: bytes, on_request: Callable[[int], bool]) -> None:
        self.upstream_port, self.request, self.on_request = upstream_port, request, on_request
        self.seen = 0
        self.cut = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self._listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, scan: bool) -> None:
        tail = b""  # shorter than the pattern: a request split across two reads is counted once
        while True:
            try:
                data = src.recv(1 << 16)
            except OSError:
                return
            if not data:
                break
            if scan:
                window = tail + data
                tail = window[-(len(self.request) - 1):]
                if not all(self._passes() for _ in range(window.count(self.request))):
                    return
            try:
                dst.sendall(data)
            except OSError:
                return
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _passes(self) -> bool:
        with self._lock:
            self.seen += 1
            n = self.seen
        if not self.cut.is_set() and self.on_request(n):
            return True
        self.close()
        return False

    def close(self) -> None:
        self.cut.set()
        try:  # wakes the accepting thread (a bare close() would leave the port accepting into the backlog)
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


def test_the_same_input_submitted_twice_at_once_makes_one_archive(marriage_pdf, s3_env, s3_store_url, s3_settings,
                                                                  prefect_api, counting_tesseract, tmp_path):
    """Two ``sohoa run`` of one file, same archive, same work store, started together and held so that both
    claim the input's content at the same instant: one passes, the other is its duplicate, the pages are read
    once and there is one archive.

    The mechanism (sohoa/services/claims.py): before capture each run creates ``claims/<sha256>/00000001.json``
    create-only (a conditional PUT, ``If-None-Match: *``); the relay holds both PUTs until both are in flight,
    so the server decides. The run that loses waits for the winner to release its claim, then finds its archive.

    First in the module, on its new Prefect server: the two commands also register the result-storage
    block with Prefect at the same instant, as two runs on a new installation would."""
    path, truth = marriage_pdf
    bucket = s3_store_url.split("/")[2]
    archive_url = f"s3://{bucket}/archive"
    both = threading.Barrier(2, timeout=60)

    def hold_until_both_claim(n: int) -> bool:
        if n <= 2:  # the two create-only PUTs; then the holder's renewals and release go through
            try:
                both.wait()
            except threading.BrokenBarrierError:  # one run never got there: let the other go on (the test fails)
                pass
        return True

    claim = f"PUT /{bucket}/archive/claims/"
    relay = Relay(int(s3_env.url.rsplit(":", 1)[1]), claim.encode(), hold_until_both_claim)
    tesseract, log = counting_tesseract
    env = {"SOHOA_S3_ENDPOINT": relay.url, "SOHOA_OCR_ENGINE": "cli", "SOHOA_TESSERACT_CMD": tesseract}
    args = ["run", "--json", str(path), "--archive", archive_url, "--work", str(tmp_path / "work")]
    try:
        runs = [start(*args, env=env, api=prefect_api) for _ in range(2)]
        results = [finish(run) for run in runs]
    finally:
        relay.close()
    for code, _, stderr in results:
        assert code == 0, stderr
    assert relay.seen >= 2 and not both.broken  # both claims were in flight together
    passed, duplicate = sorted((lines[0] for _, lines, _ in results), key=lambda line: line["status"] != "passed")
    assert (passed["status"], duplicate["status"]) == ("passed", "duplicate"), (passed, duplicate)
    assert passed["dossier_id"] == duplicate["dossier_id"] == truth.dossier_code
    assert passed["manifest"] == duplicate["manifest"]  # the duplicate names the archive the first run made
    assert sum("--psm" in line for line in log.read_text().splitlines()) == len(truth.pages)  # one OCR run

    store = open_store(archive_url, s3=s3_settings)
    pointers = [info.key for info in store.list("index/dossiers/")]
    assert pointers == [layout.pointer_key(truth.dossier_code)]  # no <id>~<hash> sibling
    prefix = layout.locate(store, truth.dossier_code)
    assert passed["manifest"] == f"{archive_url}/{prefix}manifest.json"
    assert layout.manifest_keys(store) == [prefix + "manifest.json"]
    manifest = Manifest.model_validate_json(store.get_bytes(prefix + "manifest.json"))
    assert manifest.source.sha256 == sha256_file(path) and manifest.status == "passed"
    code, report = check(archive_url, {})  # s3_env: the session server
    assert code == 0 and report["problems"] == [] and report["dossiers"] == 1, report
    kept = [info.key for info in store.list(prefix + "history/")]
    assert manifest.revision == 1 and kept == [], (manifest.revision, kept)  # not archived twice as two revisions


def test_s3_server_dies_while_archiving_then_the_retry_completes(marriage_pdf, restartable_s3, prefect_api, tmp_path):
    """Killed at the archive's second write (the original is in, nothing else): the run fails with one clear
    line, nothing looks archived, and the same command once the server is back completes the archive."""
    path, truth = marriage_pdf
    before = path.read_bytes()
    server, bucket = restartable_s3, "faults"
    archive_url, work = f"s3://{bucket}/archive", str(tmp_path / "work")
    store = open_store(archive_url, s3=server.settings())
    store.ensure_ready()

    def second_file_kills(n: int) -> bool:  # the original goes in; the server dies as the next file comes
        if n < 2:
            return True
        server.kill()
        return False

    relay = Relay(server.port, f"PUT /{bucket}/archive/dossiers/".encode(), second_file_kills)
    try:
        code, [line], stderr = sohoa("run", "--json", str(path), "--archive", archive_url, "--work", work,
                                     env={**server.env, "SOHOA_S3_ENDPOINT": relay.url}, api=prefect_api)
    finally:
        relay.close()
    assert relay.seen >= 2 and not server.running, "the server was not stopped while archiving"
    assert code == 4, stderr
    assert line["status"] == "failed" and f"cannot reach S3 endpoint 127.0.0.1:{relay.port}" in line["reason"]["message"]
    assert "\n" not in line["reason"]["message"]
    assert "Traceback" not in stderr, stderr
    assert path.read_bytes() == before  # the input is where it was, as it was

    server.start()  # same port, same data: what the server had acknowledged is there
    prefix = layout.locate(store, truth.dossier_code)  # claimed before the first file was written
    assert prefix is not None
    keys = [info.key for info in store.list(layout.DOSSIERS)]
    assert keys == [f"{prefix}original.pdf"], keys  # the archive stopped after its first file
    settings = Settings(archive=archive_url, work=work)
    sha256 = sha256_file(path)
    verify_key = admit(path, settings, None, store, refresh=False).steps["verify"].key
    assert find_archived(store, sha256, verify_key) is None  # not indexed: a rerun does not call it a duplicate
    assert not store.exists(source_index_key(sha256))
    code, report = check(archive_url, server.env)
    assert code == 6 and [(p["kind"], p["key"]) for p in report["problems"]] == [("incomplete", prefix)], report

    code, [line], stderr = sohoa("run", "--json", str(path), "--archive", archive_url, "--work", work,
                                 env=server.env, api=prefect_api)
    assert code == 0, stderr
    assert line["status"] == "passed" and line["cached_steps"] == ["capture", "ocr", "classify", "verify"]
    assert line["manifest"] == f"{archive_url}/{prefix}manifest.json"  # completed in place, no second prefix
    code, report = check(archive_url, server.env)
    assert code == 0 and report["problems"] == [] and report["dossiers"] == 1, report
    earlier = find_archived(store, sha256, verify_key)
    assert earlier is not None and earlier.manifest_key == prefix + "manifest.json"
    assert Manifest.model_validate_json(store.get_bytes(prefix + "manifest.json")).files["original"].sha256 == sha256
    assert path.read_bytes() == before


@pytest.fixture(scope="module")
def birth_pdf_4(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, synth.SynthDossier]:
    """A complete four-page birth-registration dossier (receipt, two-page declaration, birth certificate)."""
    out = tmp_path_factory.mktemp("faults") / "khai-sinh.pdf"
    return out, synth.make_dossier(out, procedure="1.001193", seed=2,
                                   include=["phieu_tiep_nhan", "to_khai_khai_sinh", "giay_chung_sinh"])


def pages_read(log: Path) -> list[int]:
    """Page numbers tesseract was started for (one pass each; the OCR copy's name is pNNNNrDDD)."""
    return sorted(int(m.group(1)) for line in log.read_text().splitlines() if "--psm" in line
                  for m in [re.search(r"/p(\d{4})r\d{3}\b", line)] if m)


def wait_for(predicate: Callable[[], bool], process: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"sohoa exited ({process.returncode}) before {what}: {process.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def pdf_text(data: bytes, tmp: Path) -> str:
    path = tmp / "text.pdf"
    path.write_bytes(data)
    done = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True)
    return unicodedata.normalize("NFC", done.stdout)


def test_a_run_killed_while_reading_pages_is_resumed_from_its_kept_pages(birth_pdf_4, counting_tesseract, prefect_api, tmp_path):
    """SIGKILL (the whole process group: CLI and tesseract) once two pages are kept; the rerun reads only
    the pages not kept (and one whose checkpoint was damaged), and archives what a clean run archives."""
    path, truth = birth_pdf_4
    cmd, log = counting_tesseract
    work, archive = tmp_path / "work", tmp_path / "archive"
    env = {"SOHOA_OCR_ENGINE": "cli", "SOHOA_TESSERACT_CMD": cmd, "SOHOA_JOBS": "1"}  # one page at a time: a wide window
    args = ["run", "--json", str(path), "--archive", str(archive), "--work", str(work)]
    checkpoints = lambda: sorted(work.glob("ocr/*/p*.json"))  # noqa: E731
    killed = start(*args, env=env, api=prefect_api)
    try:
        wait_for(lambda: len(checkpoints()) >= 2, killed, 240, "two pages were kept")
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.communicate()
    kept = checkpoints()
    total = len(truth.pages)
    assert 2 <= len(kept) < total, f"{len(kept)} of {total} pages kept when killed"
    assert all(p.with_suffix(".pdf").is_file() for p in kept)  # each checkpoint beside its text layer
    assert not list(archive.glob("**/manifest.json"))
    damaged = kept[-1]
    damaged.write_text(damaged.read_text()[:100])  # a checkpoint that does not parse: that page is read again
    resumed = {int(p.stem[1:]) for p in kept[:-1]}
    log.write_text("")

    code, [line], stderr = sohoa(*args, env={**env, "SOHOA_JOBS": "2"}, api=prefect_api)
    assert code == 0, stderr
    assert line["status"] == "passed" and line["cached_steps"] == ["capture"]  # the step itself was not finished
    assert pages_read(log) == sorted(set(range(1, total + 1)) - resumed)
    assert f"resumed {len(resumed)} of {total} pages" in stderr and "read again, its checkpoint was not usable: Invalid JSON" in stderr
    assert checkpoints() == []  # a finished step leaves no checkpoints: a refresh reads every page again

    log.write_text("")
    clean = tmp_path / "archive-clean"
    code, [again], stderr = sohoa("run", "--json", str(path), "--archive", str(clean), "--work", str(work),
                                  "--refresh", "ocr", env={**env, "SOHOA_JOBS": "2"}, api=prefect_api)
    assert code == 0, stderr
    assert again["status"] == "passed" and pages_read(log) == list(range(1, total + 1))
    resumed_store, clean_store = open_store(str(archive)), open_store(str(clean))
    ours = Manifest.model_validate_json(resumed_store.get_bytes(layout.locate(resumed_store, line["dossier_id"]) + "manifest.json"))
    theirs = Manifest.model_validate_json(clean_store.get_bytes(layout.locate(clean_store, again["dossier_id"]) + "manifest.json"))
    assert [(p.n, p.text, p.ocr_confidence, p.rotation, p.type) for p in ours.pages] == [
        (p.n, p.text, p.ocr_confidence, p.rotation, p.type) for p in theirs.pages]
    assert [(d.type, d.pages) for d in ours.documents] == [(d.type, d.pages) for d in theirs.documents]
    for name in ("searchable_pdf", *(n for n in theirs.files if n.startswith("document_"))):
        assert pdf_text(resumed_store.get_bytes(ours.files[name].key), tmp_path) == \
            pdf_text(clean_store.get_bytes(theirs.files[name].key), tmp_path), name
    assert resumed_store.get_bytes(ours.files["ocr_words"].key) == clean_store.get_bytes(theirs.files["ocr_words"].key)


NO_SPACE = "no_space"  # the reason code of a failure caused by a full disk (sohoa/kernel/errors.py)


class SmallDisk:
    """A tmpfs of ``size`` mounted at ``path``: a real filesystem that fills up (ENOSPC), grown in place later."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=1777", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs to fill up (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")

    def grow(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True, capture_output=True)

    def unmount(self) -> None:
        subprocess.run(["umount", str(self.path)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    disk = SmallDisk(tmp_path / "small-disk", "256k")  # less than one scanned page
    try:
        yield disk
    finally:
        disk.unmount()


@pytest.mark.parametrize("full", ["work store", "temporary files"])
def test_a_full_disk_fails_the_dossier_with_a_clear_reason_and_a_rerun_passes(full, marriage_pdf, small_disk,
                                                                            prefect_api, tmp_path):
    """The work store (page images: capture's first write fails) or TMPDIR (the searchable PDF, after the pages
    are read) on a full disk: one line that says so, no traceback, the input kept and quarantined with the
    reason; once there is space, the same command passes."""
    path, _ = marriage_pdf
    before = path.read_bytes()
    archive = tmp_path / "archive"
    if full == "work store":
        work, env = small_disk.path / "work", {}
    else:
        work, env = tmp_path / "work", {"TMPDIR": str(small_disk.path)}
    args = ["run", "--json", str(path), "--archive", str(archive), "--work", str(work)]

    code, [line], stderr = sohoa(*args, env=env, api=prefect_api)
    assert code == 4, stderr
    reason = line["reason"]
    assert line["status"] == "failed" and reason["code"] == NO_SPACE, line
    assert "no space left on device" in reason["message"].lower() and "\n" not in reason["message"]
    assert "<_io." not in reason["message"], reason  # a path, not the repr of a file object
    assert "Traceback" not in stderr, stderr
    assert path.read_bytes() == before
    [kept] = [json.loads(p.read_text()) for p in archive.glob("quarantine/*/reason.json")]
    assert (kept["code"], kept["message"]) == (reason["code"], reason["message"])
    assert [open_store(str(archive)).get_bytes(key) for key in kept["files"]] == [before]
    assert not list(archive.glob("**/manifest.json"))

    small_disk.grow("64m")  # space freed
    code, [line], stderr = sohoa(*args, env=env, api=prefect_api)
    assert code == 0, stderr
    assert line["status"] == "passed", line
    assert path.read_bytes() == before
    if full == "temporary files":  # the pages read before the disk filled up were kept, not read again
        assert line["cached_steps"] == ["capture"] and "resumed 2 of 2 pages" in stderr
        assert not list(small_disk.path.iterdir()), "temporary files left behind"
