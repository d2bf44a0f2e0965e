"""End to end through ``sohoa run``: real Prefect (embedded API), real Tesseract, real S3 server."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import jsonschema
import pikepdf
import pytest
from PIL import Image
from sohoa_dev import synth

from sohoa.kernel.models import Manifest
from sohoa.storage import open_store
from tests.archived import expected_prefix

pytestmark = pytest.mark.slow
SOHOA = str(Path(sys.executable).parent / "sohoa")
SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "manifest.schema.json").read_text())


def sohoa(*args: str, env: dict[str, str] | None = None) -> tuple[int, list[dict], str]:
    done = subprocess.run([SOHOA, "run", "--json", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, lines, done.stderr


def calls(log: Path) -> int:
    return sum(1 for line in log.read_text().splitlines() if "--psm" in line)


def test_dossier_to_s3_archive_then_fully_cached_rerun(birth_pdf, s3_env, s3_store_url, counting_tesseract, tmp_path):
    path, truth = birth_pdf
    bucket = s3_store_url.split("/")[2]
    archive_url, work_url = f"s3://{bucket}/archive", f"s3://{bucket}/work"
    cmd, log = counting_tesseract
    env = {"SOHOA_TESSERACT_CMD": cmd, "SOHOA_WORK": work_url, "SOHOA_OCR_ENGINE": "cli"}  # processes can be counted

    code, [first], stderr = sohoa(str(path), "--archive", archive_url, env=env)
    assert code == 0, stderr
    assert first["status"] == "passed" and first["dossier_id"] == truth.dossier_code
    prefix = expected_prefix(truth.dossier_code, "1.001193")  # agency / procedure / year / dossier code
    assert first["manifest"] == f"{archive_url}/{prefix}manifest.json"
    assert first["cached_steps"] == []
    assert calls(log) == len(truth.pages)  # one tesseract pass per page

    archive = open_store(archive_url)
    raw = json.loads(archive.get_bytes(f"{prefix}manifest.json"))
    jsonschema.validate(raw, SCHEMA)
    manifest = Manifest.model_validate(raw)
    assert raw["schema"] == "sohoa.manifest/2"
    assert [d.type for d in manifest.documents] == [
        "phieu_tiep_nhan", "to_khai_khai_sinh", "giay_chung_sinh", "can_cuoc"]
    assert manifest.documents[1].pages == [2, 3]
    assert manifest.procedure == "1.001193" and manifest.fields.dossier_code == truth.dossier_code
    assert manifest.fields.dossier_code_source == "qr"
    assert set(manifest.fields.cccd) == set(truth.cccd)
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
    declaration = manifest.documents[1]  # the two-page declaration, as its own searchable PDF
    part = tmp_path / "declaration.pdf"
    part.write_bytes(archive.get_bytes(declaration.file))
    subprocess.run(["qpdf", "--check", str(part)], check=True, capture_output=True)
    part_text = unicodedata.normalize("NFC", subprocess.run(["pdftotext", str(part), "-"], capture_output=True,
                                                            text=True, check=True).stdout)
    assert "TỜ KHAI ĐĂNG KÝ KHAI SINH" in part_text and "GIẤY CHỨNG SINH" not in part_text
    assert part_text.count("\f") == 2

    # the same file again, same settings: a duplicate of a complete archive, not processed twice
    code, [again], stderr = sohoa(str(path), "--archive", archive_url, env=env)
    assert code == 0, stderr
    assert (again["status"], again["dossier_id"], again["manifest"]) == ("duplicate", truth.dossier_code, first["manifest"])
    assert (again["archived_status"], again["pages"], again["documents"]) == ("passed", first["pages"], first["documents"])

    # into another archive: every step comes from the persisted results in the work store
    code, [second], stderr = sohoa(str(path), "--archive", f"s3://{bucket}/archive-2", env=env)
    assert code == 0, stderr
    assert second["status"] == "passed"
    assert second["cached_steps"] == ["capture", "ocr", "classify", "verify"]
    assert calls(log) == len(truth.pages)  # no tesseract process started
    # how much faster the cached rerun is belongs to bench/throughput.py (phase e), not to a timed test

    # a classification setting changed: classify and verify rerun, nothing before them
    code, [third], stderr = sohoa(str(path), "--archive", archive_url, env={**env, "SOHOA_TITLE_LINES": "11"})
    assert code == 0, stderr
    assert third["status"] == "passed" and third["cached_steps"] == ["capture", "ocr"]
    assert calls(log) == len(truth.pages)


def test_several_inputs_run_side_by_side_in_one_batch(tmp_path, birth_pdf):
    """Pages of two dossiers interleave on the engines; a bad input and a same-content copy change nothing."""
    marriage = tmp_path / "ket-hon.pdf"
    synth.make_dossier(marriage, procedure="1.000894", seed=4)
    copy = tmp_path / "ban-sao.pdf"
    copy.write_bytes(birth_pdf[0].read_bytes())
    broken = tmp_path / "hong.pdf"
    broken.write_bytes(birth_pdf[0].read_bytes()[:4000])
    archive = tmp_path / "archive"

    code, lines, stderr = sohoa(str(birth_pdf[0]), str(marriage), str(broken), str(copy), "--archive", str(archive),
                                "--work", str(tmp_path / "work"))
    assert code == 3, stderr
    assert [line["status"] for line in lines] == ["passed", "passed", "refused", "duplicate"]
    assert lines[3]["dossier_id"] == lines[0]["dossier_id"] and lines[2]["reason"]["code"] == "corrupt_file"
    assert all(Path(line["manifest"]).is_file() for line in lines[:2])
    # one flow run: the OCR progress of the two dossiers interleaves
    runs = [line.split("- OCR ")[1].split(":")[0] for line in stderr.splitlines() if "- OCR " in line]
    assert set(runs) == {birth_pdf[0].name, marriage.name} and len(runs) == 5 + lines[1]["pages"]
    first_of = {run: runs.index(run) for run in set(runs)}
    last_of = {run: len(runs) - 1 - runs[::-1].index(run) for run in set(runs)}
    assert max(first_of.values()) < min(last_of.values()), runs


def _refusal_inputs(tmp_path: Path, big_pdf: Path) -> list[tuple[Path, str]]:
    """One input per refusal case, with the reason code each must get."""
    cases: list[tuple[Path, str]] = []

    def add(name: str, code: str, data: bytes | None = None) -> Path:
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        cases.append((path, code))
        return path

    add("empty.pdf", "empty_file", b"")
    add("notes.pdf", "unsupported_type", "Ghi chú, không phải bản quét".encode())
    one_page = tmp_path / "one-page.pdf"
    synth.make_dossier(one_page, include=["giay_chung_sinh"])
    add("truncated.pdf", "corrupt_file", one_page.read_bytes()[:5000])
    with pikepdf.open(one_page) as pdf:
        pdf.save(add("locked.pdf", "encrypted_pdf"), encryption=pikepdf.Encryption(user="mật khẩu", owner="o"))
    with pikepdf.new() as pdf:
        pdf.save(add("no-pages.pdf", "no_pages"))
    png = io.BytesIO()
    Image.new("L", (850, 1100), 255).save(png, format="PNG")
    add("photo.pdf", "extension_mismatch", png.getvalue())
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000), 1).save(bomb, format="PNG")
    add("bomb.png", "too_many_pixels", bomb.getvalue())
    add("big.pdf", "too_large", big_pdf.read_bytes())
    blank = Image.new("1", (850, 1100), 1)
    blank.save(add("many.tif", "too_many_pages"), save_all=True, append_images=[blank] * 5, compression="group4")
    add("..\x1b[31mevil\nname.pdf", "bad_name", b"%PDF-1.4\n")
    cases.append((Path(os.fsdecode(bytes(tmp_path) + b"/h\xf4 s\xff.pdf")), "bad_name"))
    cases[-1][0].write_bytes(b"%PDF-1.4\n")
    linked = add("linked-pages", "unsafe_link")
    linked.mkdir()
    (linked / "page-1.png").write_bytes(png.getvalue())
    (linked / "page-2.png").symlink_to("/etc/passwd")
    add("missing.pdf", "not_found")
    return cases


def test_every_refusal_is_quarantined_with_its_reason_and_nothing_is_lost(tmp_path, synth_dir, birth_pdf):
    good = synth_dir / "incomplete-pages"
    synth.make_dossier(good, fmt="png-dir", include=["phieu_tiep_nhan", "to_khai_khai_sinh"], seed=3)
    (tmp_path / "in").mkdir()
    cases = _refusal_inputs(tmp_path / "in", birth_pdf[0])
    archive, scratch = tmp_path / "archive", tmp_path / "scratch"
    scratch.mkdir()
    inputs = [good] + [path for path, _ in cases]
    limits = {"SOHOA_MAX_INPUT_BYTES": "1500000", "SOHOA_MAX_PAGES": "4", "TMPDIR": str(scratch)}

    code, lines, stderr = sohoa(*map(str, inputs), "--archive", str(archive), env=limits)
    assert code == 3, stderr
    assert "Traceback" not in stderr
    assert len(lines) == len(inputs)
    assert lines[0]["status"] == "needs_review"  # the good dossier finished among the bad ones
    raw = json.loads(Path(lines[0]["manifest"]).read_text())
    jsonschema.validate(raw, SCHEMA)
    assert Manifest.model_validate(raw).verification.missing == ["giay_chung_sinh"]
    assert [(line["status"], line["reason"]["code"]) for line in lines[1:]] == [("refused", c) for _, c in cases]
    assert all(line["reason"]["message"] and "\n" not in line["reason"]["message"] for line in lines[1:])

    store = open_store(str(archive))
    for (path, code), line in zip(cases, lines[1:]):
        reason = json.loads(Path(line["quarantine"]).read_text())
        assert reason["code"] == code and reason["input_name"].isprintable()
        kept = [store.get_bytes(key) for key in reason["files"]]
        if code == "too_large":  # described, not copied: the input is still there, its size and SHA-256 recorded
            assert kept == [] and [(i["size"], i["sha256"]) for i in reason["inputs"]] == [
                (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())]
        elif path.is_file():  # nothing lost: the quarantine holds the input's bytes, and the input is still there
            assert kept == [path.read_bytes()]
        elif path.is_dir():
            assert kept == [(path / "page-1.png").read_bytes()] and reason["skipped"] == ["page-2.png"]
        else:
            assert code == "not_found" and kept == []
    assert not list(scratch.glob("sohoa-*")), "temporary files left behind"


def test_engine_failure_fails_the_dossier_and_quarantines_it(tmp_path, birth_pdf):
    archive = tmp_path / "archive"
    code, [line], stderr = sohoa(str(birth_pdf[0]), "--archive", str(archive), env={"SOHOA_LANGUAGES": "vie+xyz"})
    assert code == 4 and line["status"] == "failed"
    assert line["reason"]["code"] == "language_missing" and "language data missing: xyz" in line["reason"]["message"]
    [reason] = [json.loads(r.read_text()) for r in archive.glob("quarantine/*/reason.json")]
    assert reason["code"] == "language_missing" and reason["sha256"]
    assert not list(archive.glob("dossiers/*"))


def test_the_flow_prepares_its_own_stores_when_a_deployment_runs_it(birth_pdf, tmp_path, monkeypatch):
    """A worker calls the flow directly: no CLI has created the archive or work store before."""
    from sohoa.orchestration.process import process_dossier

    monkeypatch.setenv("SOHOA_WORK", str(tmp_path / "new" / "work"))
    outcome = process_dossier(source=str(birth_pdf[0]), archive=str(tmp_path / "new" / "archive"))
    assert outcome.status == "passed" and Path(outcome.manifest).is_file()


def test_a_batch_run_processes_the_same_content_once(birth_pdf, tmp_path, monkeypatch):
    """The process-batch deployment gets sources as they come: a same-content copy waits, then is a duplicate."""
    from sohoa.orchestration.process import process_batch

    copy = tmp_path / "ban-sao.pdf"
    copy.write_bytes(birth_pdf[0].read_bytes())
    monkeypatch.setenv("SOHOA_WORK", str(tmp_path / "work"))
    outcomes = process_batch(sources=[str(birth_pdf[0]), str(copy), str(tmp_path / "missing.pdf")],
                             archive=str(tmp_path / "archive"))
    assert [o.status for o in outcomes] == ["passed", "duplicate", "refused"]
    assert outcomes[1].dossier_id == outcomes[0].dossier_id and outcomes[2].reason.code == "not_found"
