"""End to end through ``sohoa run``: real Prefect (embedded API), real Tesseract, real S3 server."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import unicodedata
from pathlib import Path

import jsonschema
import pytest

from pipeline import synth
from pipeline.models import Manifest
from storage import open_store

pytestmark = pytest.mark.slow
SOHOA = str(Path(sys.executable).parent / "sohoa")
SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "manifest.schema.json").read_text())


def sohoa(*args: str, env: dict[str, str] | None = None) -> tuple[int, list[dict], str]:
    done = subprocess.run([SOHOA, "run", "--json", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, lines, done.stderr


@pytest.fixture
def counting_tesseract(tmp_path: Path) -> tuple[str, Path]:
    """A tesseract that logs each start, so a test can prove that a cached rerun starts none."""
    log = tmp_path / "tesseract-calls.log"
    wrapper = tmp_path / "bin" / "tesseract"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexec /usr/bin/tesseract "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    log.touch()
    return str(wrapper), log


def calls(log: Path) -> int:
    return sum(1 for line in log.read_text().splitlines() if "--psm" in line)


def test_dossier_to_s3_archive_then_fully_cached_rerun(birth_pdf, s3_env, s3_store_url, counting_tesseract, tmp_path):
    path, truth = birth_pdf
    bucket = s3_store_url.split("/")[2]
    archive_url, work_url = f"s3://{bucket}/archive", f"s3://{bucket}/work"
    cmd, log = counting_tesseract
    env = {"SOHOA_TESSERACT_CMD": cmd, "SOHOA_WORK": work_url}

    code, [first], stderr = sohoa(str(path), "--archive", archive_url, env=env)
    assert code == 0, stderr
    assert first["status"] == "passed" and first["dossier_id"] == truth.dossier_code
    assert first["manifest"] == f"{archive_url}/dossiers/{truth.dossier_code}/manifest.json"
    assert first["cached_steps"] == []
    assert calls(log) == len(truth.pages)  # one tesseract pass per page

    archive = open_store(archive_url)
    raw = json.loads(archive.get_bytes(f"dossiers/{truth.dossier_code}/manifest.json"))
    jsonschema.validate(raw, SCHEMA)
    manifest = Manifest.model_validate(raw)
    assert raw["schema"] == "sohoa.manifest/1"
    assert [d.type for d in manifest.documents] == [
        "phieu_tiep_nhan", "to_khai_khai_sinh", "giay_chung_sinh", "can_cuoc"]
    assert manifest.documents[1].pages == [2, 3]
    assert manifest.procedure == "1.001193" and manifest.fields["dossier_code"] == truth.dossier_code
    assert manifest.fields["dossier_code_source"] == "qr"
    assert set(manifest.fields["cccd"]) == set(truth.cccd)
    for page, expected in zip(manifest.pages, truth.pages):
        assert unicodedata.is_normalized("NFC", page.text)
        assert all(word in page.text for word in expected.expected_words), (page.n, expected.expected_words)
    assert archive.get_bytes(manifest.files["original"].key) == path.read_bytes()
    assert manifest.source.sha256 == manifest.files["original"].sha256
    pdf = tmp_path / "searchable.pdf"
    pdf.write_bytes(archive.get_bytes(manifest.files["searchable_pdf"].key))
    text = unicodedata.normalize("NFC", subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True,
                                                       text=True, check=True).stdout)
    assert "GIẤY CHỨNG SINH" in text and "TỜ KHAI ĐĂNG KÝ KHAI SINH" in text
    assert archive.stat(manifest.files["searchable_pdf"].key).metadata["sha256"] == manifest.files["searchable_pdf"].sha256

    # the same file again, same settings: a duplicate of a complete archive, not processed twice
    code, [again], stderr = sohoa(str(path), "--archive", archive_url, env=env)
    assert code == 0, stderr
    assert (again["status"], again["dossier_id"], again["manifest"]) == ("duplicate", truth.dossier_code, first["manifest"])

    # into another archive: every step comes from the persisted results in the work store
    code, [second], stderr = sohoa(str(path), "--archive", f"s3://{bucket}/archive-2", env=env)
    assert code == 0, stderr
    assert second["status"] == "passed"
    assert second["cached_steps"] == ["capture", "ocr", "classify", "verify"]
    assert calls(log) == len(truth.pages)  # no tesseract process started
    assert first["duration_s"] >= 10 * second["duration_s"], (first["duration_s"], second["duration_s"])

    # a classification setting changed: classify and verify rerun, nothing before them
    code, [third], stderr = sohoa(str(path), "--archive", archive_url, env={**env, "SOHOA_TITLE_LINES": "11"})
    assert code == 0, stderr
    assert third["status"] == "passed" and third["cached_steps"] == ["capture", "ocr"]
    assert calls(log) == len(truth.pages)


def test_bad_inputs_are_quarantined_and_do_not_stop_the_others(tmp_path, synth_dir):
    good = synth_dir / "incomplete-pages"
    synth.make_dossier(good, fmt="png-dir", include=["phieu_tiep_nhan", "to_khai_khai_sinh"], seed=3)
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    text = tmp_path / "notes.pdf"
    text.write_text("this is not a scan")
    truncated = tmp_path / "truncated.pdf"
    truncated.write_bytes(b"%PDF-1.4\n garbage")
    hostile = tmp_path / "..\x1b[31mevil\nname.pdf"
    hostile.write_bytes(b"%PDF-1.4\n")
    not_utf8 = Path(os.fsdecode(bytes(tmp_path) + b"/h\xf4 s\xff.pdf"))
    not_utf8.write_bytes(b"%PDF-1.4\n")
    archive = tmp_path / "archive"

    inputs = [empty, good, text, truncated, hostile, not_utf8]
    code, lines, stderr = sohoa(*map(str, inputs), "--archive", str(archive))
    assert code == 3, stderr
    assert [line["status"] for line in lines] == ["refused", "needs_review", "refused", "refused", "refused", "refused"]
    codes = ["empty_file", None, "unsupported_type", "corrupt_file", "bad_name", "bad_name"]
    assert [line.get("reason", {}).get("code") for line in lines] == codes
    assert "Traceback" not in stderr
    raw = json.loads(Path(lines[1]["manifest"]).read_text())
    jsonschema.validate(raw, SCHEMA)
    assert Manifest.model_validate(raw).verification.missing == ["giay_chung_sinh"]
    reasons = [json.loads(r.read_text()) for r in sorted(archive.glob("quarantine/*/reason.json"))]
    assert sorted(r["code"] for r in reasons) == sorted(c for c in codes if c)
    for reason in reasons:
        assert reason["input_name"].isprintable() and reason["files"], reason
    assert all(p.exists() for p in inputs)  # inputs are never removed


def test_engine_failure_fails_the_dossier_and_quarantines_it(tmp_path, birth_pdf):
    archive = tmp_path / "archive"
    code, [line], stderr = sohoa(str(birth_pdf[0]), "--archive", str(archive), env={"SOHOA_LANGUAGES": "vie+xyz"})
    assert code == 4 and line["status"] == "failed"
    assert "language data missing: xyz" in line["reason"]["message"]
    [reason] = [json.loads(r.read_text()) for r in archive.glob("quarantine/*/reason.json")]
    assert reason["code"] == "processing_failed" and reason["sha256"]
    assert not list(archive.glob("dossiers/*"))
