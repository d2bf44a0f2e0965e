"""The archive as a records system sees it: a deterministic layout, Appendix VI metadata, object lock
where the bucket has it (detected without a request that could write), and one place per dossier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from minio import Minio
from minio.objectlockconfig import DAYS, GOVERNANCE, ObjectLockConfig

from sohoa.domain import layout
from sohoa.kernel.models import Manifest
from sohoa.storage import open_store
from sohoa.storage.policy import parse_policy
from tests.archived import expected_prefix

SOHOA = str(Path(sys.executable).parent / "sohoa")


def _run(path: Path, archive: str, work: Path, *args: str, **env: str) -> dict:
    done = subprocess.run([SOHOA, "run", "--json", str(path), "--archive", archive, "--work", str(work), *args],
                          capture_output=True, text=True, timeout=600, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("layout-work")  # shared: the dossier is read once, then every step is cached


@pytest.mark.slow
def test_layout_and_appendix_vi_metadata_from_what_was_read(birth_pdf, work, tmp_path):
    path, truth = birth_pdf
    line = _run(path, str(tmp_path / "archive"), work)
    prefix = expected_prefix(truth.dossier_code, truth.procedure)
    assert line["manifest"] == str(tmp_path / "archive" / prefix / "manifest.json")
    store = open_store(str(tmp_path / "archive"))
    assert layout.locate(store, truth.dossier_code) == prefix
    raw = json.loads(store.get_bytes(prefix + "manifest.json"))
    dossier, documents = raw["records"]["dossier"], raw["records"]["documents"]
    agency, year = truth.dossier_code.split("-")[0], "20" + truth.dossier_code.split("-")[1][:2]
    assert (dossier["OrganId"], dossier["FileCatalog"], dossier["FileNotation"]) == (agency, year, truth.dossier_code)
    assert dossier["FileCode"] == f"{agency}.{year}.{truth.dossier_code}"
    assert dossier["Title"] == f"Hồ sơ Đăng ký khai sinh của {truth.applicant}"
    assert (dossier["Maintenance"], dossier["Rights"], dossier["Language"]) == ("Vĩnh viễn", "Hạn chế", "Tiếng Việt")
    assert (dossier["DocTotal"], dossier["PageTotal"]) == (len(raw["documents"]), len(truth.pages))
    assert [d["TypeName"] for d in documents] == [
        "Giấy tiếp nhận hồ sơ và hẹn trả kết quả", "Tờ khai đăng ký khai sinh", "Giấy chứng sinh", "Căn cước công dân"]
    assert [d["PageAmount"] for d in documents] == [len(d["pages"]) for d in raw["documents"]]
    assert [d["DocOrdinal"] for d in documents] == [1, 2, 3, 4]
    assert dossier["StartDate"] <= dossier["EndDate"]
    assert raw["protection"] == {"mode": None, "retain_until": None, "source": "unsupported"}  # a local store

    again = _run(path, str(tmp_path / "archive"), work, "--refresh", "verify")  # archived again, same content
    assert again["manifest"] == line["manifest"]
    assert json.loads(store.get_bytes(prefix + "manifest.json")) == raw  # idempotent: same manifest, no new revision
    assert not [i.key for i in store.list(prefix + "history/")]


@pytest.mark.slow
def test_object_lock_buckets_retain_every_archived_file(birth_pdf, work, s3_server, s3_env):
    path, truth = birth_pdf
    client = Minio(s3_server.endpoint, access_key=s3_server.access_key, secret_key=s3_server.secret_key,
                   secure=False, region=s3_server.region)
    by_default, per_object = (f"lock-{uuid.uuid4().hex[:8]}" for _ in range(2))
    for bucket in (by_default, per_object):
        client.make_bucket(bucket, object_lock=True)
    client.set_object_lock_config(by_default, ObjectLockConfig(GOVERNANCE, 7, DAYS))

    raw = json.loads(open_store(f"s3://{by_default}").get_bytes(_manifest_key(_run(path, f"s3://{by_default}", work))))
    assert raw["protection"]["source"] == "bucket_default" and raw["protection"]["mode"] == "GOVERNANCE"

    started = datetime.now(UTC)
    line = _run(path, f"s3://{per_object}", work, SOHOA_RETENTION_DAYS="30")
    key = _manifest_key(line)
    manifest = Manifest.model_validate_json(open_store(f"s3://{per_object}").get_bytes(key))
    assert manifest.protection.source == "per_object"
    for retained in [key, *(ref.key for ref in manifest.files.values())]:
        retention = client.get_object_retention(per_object, retained)
        assert retention.mode == "GOVERNANCE", retained
        assert abs(retention.retain_until_date - (started + timedelta(days=30))) < timedelta(minutes=5)


def _manifest_key(line: dict) -> str:
    return line["manifest"].split("/", 3)[3]


def test_only_a_lock_configuration_that_says_enabled_counts():
    """rclone serve s3 answers ``GET ?object-lock`` with a listing: sending it retention would overwrite."""
    listing = b'<?xml version="1.0"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name>' \
              b'<ObjectLockEnabled>Enabled</ObjectLockEnabled></ListBucketResult>'
    assert not parse_policy(listing).enabled
    assert not parse_policy(b"<Error><Code>ObjectLockConfigurationNotFoundError</Code></Error>").enabled
    assert not parse_policy(b"not xml").enabled
    bare = parse_policy(b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled></ObjectLockConfiguration>")
    assert bare.enabled and bare.default_mode is None
    ruled = parse_policy(b'<ObjectLockConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><ObjectLockEnabled>'
                         b'Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>COMPLIANCE</Mode><Years>2</Years>'
                         b'</DefaultRetention></Rule></ObjectLockConfiguration>')
    assert (ruled.default_mode, ruled.default_days) == ("COMPLIANCE", 730)


def test_a_bucket_without_object_lock_is_never_sent_retention(s3_env, s3_store_url):
    store = open_store(s3_store_url)
    store.ensure_ready()
    assert not store.lock_policy().enabled
    with pytest.raises(Exception, match="no object lock"):
        store.protect("x", "GOVERNANCE", datetime.now(UTC) + timedelta(days=1))


def test_concurrent_claims_of_one_dossier_agree_and_another_input_gets_a_sibling(s3_env, s3_store_url):
    store = open_store(s3_store_url)
    store.ensure_ready()
    code = "000.00.00.H49-261201-0007"
    place = layout.Place.of(code, "1.001193", "2026-12-01T08:00:00+00:00", "unknown")
    results: list[tuple[str, str]] = []
    threads = [threading.Thread(target=lambda: results.append(layout.claim(store, code, "a" * 64, place))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(results) == {(code, f"dossiers/000.00.00.H49/1.001193/2026/{code}/")}
    other = layout.claim(store, code, "b" * 64, layout.Place.of(code, "1.000894", "2026-12-01", "unknown"))
    assert other == (f"{code}~bbbbbbbbbbbb", f"dossiers/000.00.00.H49/1.000894/2026/{code}~bbbbbbbbbbbb/")
    assert layout.claim(store, code, "a" * 64, layout.Place.of(code, "1.000894", "2027-01-01", "x"))[1] == results[0][1]


@pytest.mark.parametrize("hostile", ["../etc", "a/b", "..", ".hidden", "x\x00y", "000.00.00.H49-261201-0007/../..", ""])
def test_hostile_components_never_become_keys(hostile):
    with pytest.raises(layout.LayoutError):
        layout.Place.of(hostile, None, "2026-12-01", "unknown").prefix(hostile)
    assert layout.Place.of("sha256-0123456789abcdef", hostile, "2026-12-01", "unknown").procedure == "unknown"


def test_without_a_dossier_code_the_configured_agency_and_the_drop_year_file_it():
    place = layout.Place.of("sha256-0123456789abcdef", None, "2025-12-31T23:00:00+00:00", "000.00.00.H49")
    assert place.prefix("sha256-0123456789abcdef") == "dossiers/000.00.00.H49/unknown/2025/sha256-0123456789abcdef/"
