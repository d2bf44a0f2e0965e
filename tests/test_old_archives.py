"""Archives written before the package change (manifest schema 1) still pass check, find and review.

``tests/data/archive-v1`` is a real archive made by the code before it (commit 734a5f0, the
``pipeline``/``flows`` layout, ``sohoa.manifest/1``): a one-page dossier (a receipt, invented
data) waiting for review, with its review queue entry and SHA-256 metadata as that code wrote them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sohoa.domain import layout
from sohoa.kernel.models import Manifest
from sohoa.storage import open_store

DATA = Path(__file__).resolve().parent / "data" / "archive-v1"
SOHOA = str(Path(sys.executable).parent / "sohoa")
DOSSIER = "000.00.00.H49-260403-1791"
PERSON = "022195589911"
MANIFEST = DATA / "dossiers/000.00.00.H49/1.001193/2026" / DOSSIER / "manifest.json"


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    copy = tmp_path / "archive"
    shutil.copytree(DATA, copy)
    return copy


def sohoa(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([SOHOA, *args], capture_output=True, text=True, timeout=300, env={**os.environ, **env})


def test_the_fixture_is_a_schema_1_archive():
    assert json.loads(MANIFEST.read_text(encoding="utf-8"))["schema"] == "sohoa.manifest/1"


def test_a_schema_1_manifest_reads_as_the_current_schema_with_typed_fields():
    manifest = Manifest.model_validate_json(MANIFEST.read_bytes())
    assert manifest.schema_id == "sohoa.manifest/2"
    assert manifest.fields.dossier_code == DOSSIER and manifest.fields.dossier_code_source == "qr"
    assert manifest.fields.cccd == [PERSON] and manifest.fields.procedure_source == "receipt"
    raw = json.loads(MANIFEST.read_text(encoding="utf-8"))["fields"]
    assert json.loads(manifest.to_json())["fields"] == raw  # the same keys and values, nothing lost or added


def test_check_finds_an_old_archive_intact(archive):
    done = sohoa("check", "--archive", str(archive), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["dossiers"] == 1


def test_find_finds_the_person_in_an_old_archive(archive):
    done = sohoa("find", "--archive", str(archive), "--cccd", PERSON, "--json")
    assert done.returncode == 0, done.stderr
    hits = [json.loads(line) for line in done.stdout.splitlines()]
    assert hits and {h["dossier_id"] for h in hits} == {DOSSIER}


@pytest.mark.tesseract  # the work store of the old archive is gone: review reads its archived original again
def test_review_settles_an_old_dossier_as_a_new_revision_and_keeps_the_old_one(archive, tmp_path):
    done = sohoa("review", DOSSIER, "--archive", str(archive), "--approve", "--by", "Lê Thu Hằng",
                 SOHOA_WORK=str(tmp_path / "work"))
    assert done.returncode == 0, done.stdout + done.stderr
    store = open_store(archive)
    prefix = layout.locate(store, DOSSIER)
    assert prefix == str(MANIFEST.parent.relative_to(DATA)) + "/"  # found where the old code put it
    now = json.loads(store.get_bytes(prefix + "manifest.json"))
    # read again with today's steps (a revision), then the decision (another): both kept in the history
    assert now["schema"] == "sohoa.manifest/2" and now["revision"] >= 2 and now["status"] == "passed"
    assert [d["by"] for d in now["decisions"]] == ["Lê Thu Hằng"]
    kept = json.loads(store.get_bytes(prefix + "history/manifest-0001.json"))
    assert kept["schema"] == "sohoa.manifest/1" and kept["status"] == "needs_review"
    assert sohoa("check", "--archive", str(archive)).returncode == 0
