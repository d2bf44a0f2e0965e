"""Readers of the whole archive over a real one (two dossiers run through the runner on the fake engine):
one truncated manifest is reported and skipped by the report, training, reprocess and the reuse index, and a
tampered original is never processed again (reprocess, sohoa review)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from unittest import mock

import pytest
from sohoa_dev import synth

from sohoa import cli
from sohoa.domain import index as reuse_index
from sohoa.domain import layout
from sohoa.domain.catalog import taxonomy
from sohoa.kernel.errors import ExitCode, ReasonCode, reason_code
from sohoa.kernel.models import Manifest
from sohoa.kernel.settings import Settings
from sohoa.services import reprocess, report, review_queue, runner, training
from sohoa.storage import open_store
from tests.fake_engine import FakeEngine, installed


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """An archive of two dossiers, one passed and one that needs review (queued), and their ids by status."""
    root = tmp_path_factory.mktemp("readers")
    settings = Settings(archive=str(root / "archive"), work=str(root / "work"))
    made = {"passed": synth.make_dossier(root / "in" / "full", procedure="1.001193", seed=3, fmt="png-dir"),
            "needs_review": synth.make_dossier(root / "in" / "short", procedure="1.001193", seed=4, fmt="png-dir",
                                               include=["phieu_tiep_nhan", "to_khai_khai_sinh"])}
    ids = {}
    for status, truth in made.items():
        with installed(FakeEngine.from_truth(truth)):
            outcome = runner.run_dossier(str(root / "in" / ("full" if status == "passed" else "short")),
                                         runner.RunContext(settings=settings))
        assert outcome.status == status, outcome
        ids[status] = outcome.dossier_id
    return root, ids


@pytest.fixture
def archive(built, tmp_path):
    """This test's own copy of the built archive and work store, and the ids."""
    root, ids = built
    for name in ("archive", "work"):
        shutil.copytree(root / name, tmp_path / name)
    return tmp_path, ids


def _manifest_key(store, dossier_id: str) -> str:
    return layout.locate(store, dossier_id) + layout.MANIFEST


def _truncate(store, dossier_id: str) -> str:
    """Cut the dossier's manifest in half (a write that stopped midway); its key."""
    broken = _manifest_key(store, dossier_id)
    whole = store.get_bytes(broken)
    store.put_bytes(broken, whole[: len(whole) // 2])
    return broken


def test_one_truncated_manifest_is_reported_and_skipped_by_report_train_reprocess_and_the_index(archive):
    root, ids = archive
    store = open_store(str(root / "archive"))
    broken = _truncate(store, ids["passed"])

    skipped: list[reuse_index.Unreadable] = []
    rows = report.build(store, skipped=skipped)
    assert report.totals(rows).archived == 1 and [u.key for u in skipped] == [broken]
    assert "EOF" in skipped[0].reason and "\n" not in skipped[0].line and broken in skipped[0].line

    found = training.harvest(store, taxonomy(None).codes())
    assert [u.key for u in found.unreadable] == [broken]

    skipped = []
    assert [m.dossier_id for m in reprocess.select(store, since="2000-01-01", skipped=skipped)] == [ids["needs_review"]]
    assert [u.key for u in skipped] == [broken]
    with pytest.raises(reprocess.NothingSelected, match=f"the manifest of {ids['passed']} cannot be read"):
        reprocess.select(store, dossier_ids=[ids["passed"]])

    skipped = []
    assert reuse_index.rebuild(store, root / "index.sqlite", skipped) == 1 and [u.key for u in skipped] == [broken]

    assert cli.main(["report", "--archive", str(root / "archive"), "--format", "json"]) == ExitCode.ok


@pytest.mark.parametrize("command,expected", [(["report", "--format", "json"], ExitCode.ok),
                                              (["train"], ExitCode.below_target)])  # the other dossier: no review yet
def test_sohoa_report_and_train_name_the_skipped_manifest_and_exit_as_usual(archive, capsys, command, expected):
    root, ids = archive
    broken = _truncate(open_store(str(root / "archive")), ids["passed"])
    code = cli.main([*command, "--archive", str(root / "archive")])
    out, err = capsys.readouterr()
    assert code == expected, err
    said = [line for line in err.splitlines() if broken in line]
    assert len(said) == 1 and said[0].startswith(f"sohoa: skipped unreadable {broken}: "), err
    assert "Traceback" not in err
    if command[0] == "report":
        assert sum(row["archived"] for row in json.loads(out)) == 1  # the readable dossier is still counted


def test_a_garbage_quarantine_reason_is_skipped_by_the_report(archive):
    root, _ = archive
    store = open_store(str(root / "archive"))
    store.put_bytes("quarantine/t-1/reason.json", b'{"code": ')
    skipped: list[reuse_index.Unreadable] = []
    report.build(store, skipped=skipped)
    assert [u.key for u in skipped] == ["quarantine/t-1/reason.json"]


def _tamper(store, manifest: Manifest) -> str:
    key = sorted(ref.key for name, ref in manifest.files.items() if name.startswith("original"))[0]
    data = bytearray(store.get_bytes(key))
    data[len(data) // 2] ^= 0xFF
    store.put_bytes(key, bytes(data))
    return key


def test_an_original_is_verified_before_it_is_processed_again(archive, tmp_path):
    root, ids = archive
    store = open_store(str(root / "archive"))
    [manifest] = reprocess.select(store, dossier_ids=[ids["passed"]])
    assert reprocess.original(store, manifest, tmp_path / "good").is_dir()  # an intact original comes back
    key = _tamper(store, manifest)
    with pytest.raises(reprocess.TamperedOriginal) as failure:
        reprocess.original(store, manifest, tmp_path / "bad")
    assert reason_code(failure.value) is ReasonCode.tampered_original
    assert failure.value.exit_code is ExitCode.integrity
    assert key in failure.value.message and ids["passed"] in failure.value.message and "\n" not in str(failure.value)
    assert not any((tmp_path / "bad").iterdir())  # nothing of the tampered original is left to run


def test_reprocess_reports_a_tampered_original_as_failed_and_fetches_the_others(archive, tmp_path):
    """The reprocess flow fetches every original before it runs any: one tampered original is that dossier's
    ``failed`` outcome (tampered_original), the others still come back to be processed again."""
    from sohoa.orchestration import operations

    root, ids = archive
    store = open_store(str(root / "archive"))
    chosen = reprocess.select(store, since="2000-01-01")
    _tamper(store, next(m for m in chosen if m.dossier_id == ids["passed"]))
    log = mock.Mock()  # the flow's run logger
    got = dict(zip((m.dossier_id for m in chosen), operations.originals(store, chosen, tmp_path, log)))
    bad, good = got[ids["passed"]], got[ids["needs_review"]]
    assert bad.status == "failed" and bad.reason.code is ReasonCode.tampered_original and bad.dossier_id == ids["passed"]
    assert isinstance(good, str) and Path(good).is_dir()
    log.error.assert_called_once_with("%s", bad.reason.message)


def test_sohoa_review_of_a_tampered_original_fails_and_writes_nothing(archive, monkeypatch, capsys):
    """The queued dossier's input is gone, so review runs it again from the archived original, which was changed."""
    root, ids = archive
    store = open_store(str(root / "archive"))
    dossier_id = ids["needs_review"]
    [entry] = [info.key for info in store.list("reviews/")]
    queued = json.loads(store.get_bytes(entry))
    assert queued["dossier_id"] == dossier_id
    store.put_bytes(entry, json.dumps({**queued, "source": str(root / "gone")}).encode())  # the input is gone
    key = _manifest_key(store, dossier_id)
    before = {info.key for info in store.list()}
    manifest = Manifest.model_validate_json(store.get_bytes(key))
    _tamper(store, manifest)
    monkeypatch.setenv("SOHOA_WORK", str(root / "work"))
    with installed(FakeEngine()):
        code = cli.main(["review", dossier_id, "--archive", str(root / "archive"), "--by", "Lê Thu Hằng", "--approve"])
    err = capsys.readouterr().err
    assert code == ExitCode.integrity, err
    assert err.startswith("sohoa: tampered_original: ") and err.count("\n") == 1, err
    assert Manifest.model_validate_json(store.get_bytes(key)).revision == manifest.revision
    assert {info.key for info in store.list()} == before and review_queue.get(store, dossier_id) is not None
    assert json.loads(store.get_bytes(key))["status"] == "needs_review"
