"""`sohoa check` on a real archive, on disk and on the S3 server: one tampered file and one orphan are
reported, exactly those, and the exit code says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sohoa.services import check
from sohoa.storage import open_store
from tests.archived import expected_prefix

pytestmark = pytest.mark.slow
SOHOA = str(Path(sys.executable).parent / "sohoa")


def _sohoa(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([SOHOA, *args], capture_output=True, text=True, timeout=600, env={**os.environ, **env})


@pytest.fixture(params=["local", "s3"])
def archive_url(request, tmp_path):
    if request.param == "s3":
        request.getfixturevalue("s3_env")
        return request.getfixturevalue("s3_store_url")
    return str(tmp_path / "archive")


def test_check_reports_exactly_the_tampered_file_and_the_orphan(birth_pdf, archive_url, tmp_path):
    path, truth = birth_pdf
    env = {"SOHOA_WORK": str(tmp_path.parent / "check-work")}  # shared by both params: OCR once
    done = _sohoa("run", "--json", str(path), "--archive", archive_url, env=env)
    assert done.returncode == 0, done.stderr
    clean = _sohoa("check", "--archive", archive_url, env=env)
    assert clean.returncode == 0 and "0 problem(s)" in clean.stderr, clean.stdout + clean.stderr

    store = open_store(archive_url)
    prefix = expected_prefix(truth.dossier_code, "1.001193")
    manifest = json.loads(store.get_bytes(prefix + "manifest.json"))
    tampered = manifest["files"]["document_02"]["key"]
    data = bytearray(store.get_bytes(tampered))
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size: only the checksum can tell
    store.put_bytes(tampered, bytes(data), metadata={"sha256": manifest["files"]["document_02"]["sha256"]})
    store.put_bytes(prefix + "documents/99-stray.pdf", b"%PDF-1.4 not ours")

    found = _sohoa("check", "--archive", archive_url, "--json", env=env)
    assert found.returncode == 6, found.stderr
    report = json.loads(found.stdout)
    assert sorted((p["kind"], p["key"]) for p in report["problems"]) == [
        ("orphan", prefix + "documents/99-stray.pdf"), ("tampered", tampered)]
    assert report["files_checked"] == len(manifest["files"])
    quick = check.check(store, hashes=False)  # sizes only: blind to a flipped byte, not to an orphan
    assert [p.kind for p in quick.problems] == ["orphan"]

    store.delete(manifest["files"]["original"]["key"])
    kinds = {p.kind: p.key for p in check.check(store).problems}
    assert kinds["missing_original"] == manifest["files"]["original"]["key"]


def test_an_archive_without_its_manifest_and_a_lost_original_are_reported(tmp_path):
    store = open_store(str(tmp_path / "archive"))
    store.ensure_ready()
    store.put_bytes("dossiers/000.00.00.H49/1.001193/2026/000.00.00.H49-261201-0001/original.pdf", b"%PDF half written")
    report = check.check(store)
    assert [(p.kind, p.dossier_id) for p in report.problems] == [("incomplete", "000.00.00.H49-261201-0001")]
