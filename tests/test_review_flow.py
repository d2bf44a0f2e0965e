"""Operator review on the deployment path: a real Prefect server, the project's deployments and a
``sohoa`` worker. A dossier that needs a person suspends its flow run with a form; the form's
answer, posted to the API as the UI posts it, is applied on resume; an unanswered review waits
in the review queue for ``sohoa review``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from sohoa_dev import synth

from tests.archived import dossier_dir
from tests.prefect_stack import BIN, Stack, wait

pytestmark = pytest.mark.slow

DEPLOYMENT = "process-dossier/process-dossier"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("review-stack")).start(
        {"PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_LOOP_SECONDS": "1"})
    stack.start_worker()
    yield stack
    stack.stop()
    assert "Traceback" not in stack.worker_logs()


def _dossier(folder: Path, name: str, seed: int, variation: synth.Variation) -> tuple[Path, synth.SynthDossier]:
    out = folder / f"{name}.pdf"
    return out, synth.make_dossier(out, procedure="1.001193", seed=seed, variation=variation)


def _untitled_certificate(folder: Path, seed: int) -> tuple[Path, synth.SynthDossier]:
    """The hospital's birth certificate lost its title: the machine cannot type it, a required component is missing."""
    pages = synth.build_layout("1.001193", seed)[0].pages
    certificate = next(p.n for p in pages if p.doc_type == "giay_chung_sinh")
    return _dossier(folder, f"untitled-{seed}", seed, synth.Variation(untitled=[certificate]))


def _manifest(archive: Path, code: str) -> dict:
    return json.loads((dossier_dir(archive, code) / "manifest.json").read_text())


def _queued(archive: Path, code: str) -> dict | None:
    path = archive / "reviews" / f"{code}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _form(stack: Stack, run_id: str) -> tuple[str, dict, str]:
    """The form the UI draws for a suspended run: its response key, JSON schema and description."""
    keyset = stack.flow_run(run_id)["state"]["state_details"]["run_input_keyset"]
    schema = stack.get(f"/flow_runs/{run_id}/input/{keyset['schema']}")  # the stored value, as JSON
    description = stack.get(f"/flow_runs/{run_id}/input/{keyset['description']}")
    return keyset["response"], schema, description


def _prefilled_documents(schema: dict) -> list[dict]:
    return schema["properties"]["documents"]["default"]


def _resume(stack: Stack, run_id: str, answer: dict) -> None:
    stack.post(f"/flow_runs/{run_id}/resume", {"run_input": answer})


def _suspended(stack: Stack, run_id: str) -> None:
    stack.wait_state(run_id, {"Suspended"}, 300)


def test_a_dossier_missing_a_component_suspends_and_passes_once_the_operator_types_it(stack, tmp_path):
    source, truth = _untitled_certificate(tmp_path, seed=0)
    archive = tmp_path / "archive"
    run_id = stack.run(DEPLOYMENT, source=str(source), archive=str(archive))
    _suspended(stack, run_id)

    manifest = _manifest(archive, truth.dossier_code)
    assert manifest["status"] == "needs_review"
    failed = {c["id"] for c in manifest["verification"]["checks"] if not c["ok"]}
    assert "components.required" in failed
    queued = _queued(archive, truth.dossier_code)
    assert queued and queued["flow_run_id"] == run_id and queued["expires_at"]

    # the form: pre-filled with the machine's reading, the failed checks in its description
    _, schema, description = _form(stack, run_id)
    documents = _prefilled_documents(schema)
    assert [d["type"] for d in documents] == [d["type"] for d in manifest["documents"]]
    kinds = schema["definitions"]["DocumentType"]["enum"] if "definitions" in schema else schema["$defs"]["DocumentType"]["enum"]
    assert "giay_chung_sinh" in kinds
    assert "components.required" in description and "![page" in description

    # the artifacts of the run: documents and checks tables, the pages that need attention
    artifacts = stack.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    keys = {a["key"] for a in artifacts}
    slug = truth.dossier_code.lower().replace(".", "-")
    assert {f"{slug}-documents", f"{slug}-checks", f"{slug}-attention"} <= keys, keys

    certificate = next(p.n for p in truth.pages if p.doc_type == "giay_chung_sinh")
    corrected = [{**d, "type": "giay_chung_sinh"} if d["pages"] == str(certificate) else d for d in documents]
    assert corrected != documents
    _resume(stack, run_id, {"operator": "Trần Thị Bình", "action": "approve", "documents": corrected,
                            "procedure": "1.001193", "reason": ""})
    stack.wait_state(run_id, {"Completed"}, 300)

    after = _manifest(archive, truth.dossier_code)
    assert after["status"] == "passed" and after["revision"] == manifest["revision"] + 1
    assert all(c["ok"] for c in after["verification"]["checks"]), [c for c in after["verification"]["checks"] if not c["ok"]]
    typed = {tuple(d["pages"]): d for d in after["documents"]}
    assert typed[(certificate,)]["type"] == "giay_chung_sinh"
    assert typed[(certificate,)]["review"]["decision"] == "corrected"
    form = next(d for d in after["documents"] if d["type"] == "to_khai_khai_sinh")
    assert typed[(certificate,)]["fields"]["child_name"] == form["fields"]["child_name"]  # read once typed
    decision = after["decisions"][-1]
    assert decision["by"] == "Trần Thị Bình" and decision["action"] == "approve"
    changed = {c["field"]: c for c in decision["changes"]}
    assert changed["status"]["before"] == "needs_review" and changed["status"]["after"] == "passed"
    assert f"khac:{certificate}" in changed["documents"]["before"]
    log = list((dossier_dir(archive, truth.dossier_code) / "decisions").glob("*.json"))
    assert [json.loads(p.read_text())["id"] for p in log] == [decision["id"]]
    assert _queued(archive, truth.dossier_code) is None

    # resumed from the top: the steps came back from the work store
    tasks = stack.post("/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
    assert {"capture", "ocr", "classify", "verify"} <= {t["name"].rsplit("-", 1)[0] for t in tasks if t["state_name"] == "Cached"}


def test_an_id_number_on_no_id_card_is_caught_and_a_rejection_needs_a_reason(stack, tmp_path):
    truth = synth.build_layout("1.001193", 2)[0]
    applicant = truth.cccd[0]
    form = next(p.n for p in truth.pages if p.doc_type == "to_khai_khai_sinh")
    wrong = applicant[:-3] + f"{(int(applicant[-3:]) + 7) % 1000:03d}"
    source, truth = _dossier(tmp_path, "wrong-id", 2, synth.Variation(replace={form: {applicant: wrong}}))
    archive = tmp_path / "archive"
    run_id = stack.run(DEPLOYMENT, source=str(source), archive=str(archive))
    _suspended(stack, run_id)

    checks = {c["id"]: c for c in _manifest(archive, truth.dossier_code)["verification"]["checks"]}
    caught = checks["consistency.applicant_cccd"]
    assert not caught["ok"] and wrong in json.dumps(caught["values"]) and applicant in json.dumps(caught["values"])
    assert caught["message_vi"]

    _, schema, _ = _form(stack, run_id)
    answer = {"operator": "Lê Văn Cường", "action": "reject", "documents": _prefilled_documents(schema), "procedure": "",
              "reason": ""}
    _resume(stack, run_id, answer)  # no reason: the form comes back with what is wrong
    wait(lambda: _form(stack, run_id)[0].endswith("review-2-response") if stack.flow_run(run_id)["state_name"] == "Suspended"
         else False, 300, "the form to be asked again")
    assert "a rejection needs a reason" in _form(stack, run_id)[2]
    _resume(stack, run_id, {**answer, "reason": "Số CCCD trên tờ khai không khớp với thẻ"})
    stack.wait_state(run_id, {"Completed"}, 300)

    after = _manifest(archive, truth.dossier_code)
    assert after["status"] == "rejected"
    assert after["decisions"][-1]["reason"] == "Số CCCD trên tờ khai không khớp với thẻ"
    assert _queued(archive, truth.dossier_code) is None


def test_an_unanswered_review_waits_in_the_queue_and_is_decided_later(stack, tmp_path):
    source, truth = _untitled_certificate(tmp_path, seed=1)
    archive = tmp_path / "archive"
    run_id = stack.run(DEPLOYMENT, source=str(source), archive=str(archive), review_timeout_s=2)
    stack.wait_state(run_id, {"Failed"}, 300)  # Prefect fails a suspended run whose time is up

    sohoa = [str(BIN / "sohoa")]
    listed = subprocess.run([*sohoa, "reviews", "--archive", str(archive), "--json"], env=stack.env,
                            capture_output=True, text=True, check=True)
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(e["dossier_id"], e["state"]) for e in entries] == [(truth.dossier_code, "expired in the Prefect UI")]

    manifest = _manifest(archive, truth.dossier_code)
    certificate = next(p.n for p in truth.pages if p.doc_type == "giay_chung_sinh")
    number = next(i for i, d in enumerate(manifest["documents"], 1) if d["pages"] == [certificate])
    source.unlink()  # the input has moved on (an inbox drop): the archived original serves
    decided = subprocess.run([*sohoa, "review", truth.dossier_code, "--archive", str(archive), "--by", "Phạm Thu",
                              "--type", f"{number}=giay_chung_sinh", "--approve", "--json"], env=stack.env, capture_output=True,
                             text=True)
    assert decided.returncode == 0, decided.stderr[-2000:]
    assert json.loads(decided.stdout.splitlines()[-1])["status"] == "passed"
    after = _manifest(archive, truth.dossier_code)
    assert after["status"] == "passed" and after["decisions"][-1]["by"] == "Phạm Thu"
    assert all(c["ok"] for c in after["verification"]["checks"])  # verified again as the operator set it
    assert _queued(archive, truth.dossier_code) is None


def test_a_long_dossier_shows_ocr_progress(stack, tmp_path):
    include = ["phieu_tiep_nhan", "to_khai_khai_sinh", "giay_chung_sinh", "can_cuoc", "giay_uy_quyen", "hop_dong",
               "so_yeu_ly_lich"]
    source = tmp_path / "long.pdf"
    truth = synth.make_dossier(source, procedure="1.001193", seed=3, include=include,
                               variation=synth.Variation(blank_after=[5]))
    assert len(truth.pages) >= 10
    run_id = stack.run(DEPLOYMENT, source=str(source), archive=str(tmp_path / "archive"))
    stack.wait_state(run_id, {"Completed", "Suspended"}, 300)
    artifacts = stack.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}, "type": {"any_": ["progress"]}}})
    assert [a["data"] for a in artifacts] == [100.0], artifacts
    assert f"{len(truth.pages)}/{len(truth.pages)} pages" in artifacts[0]["description"]


def test_a_batch_hands_each_dossier_that_needs_review_to_a_run_of_its_own(stack, tmp_path):
    source, truth = _untitled_certificate(tmp_path, seed=4)
    archive = tmp_path / "archive"
    batch = stack.run("process-batch/process-batch", sources=[str(source)], archive=str(archive))
    stack.wait_state(batch, {"Completed"}, 300)
    assert _manifest(archive, truth.dossier_code)["status"] == "needs_review"

    def review_run() -> dict | None:
        runs = stack.post("/flow_runs/filter", {"flow_runs": {"state": {"name": {"any_": ["Suspended"]}}}})
        return next((r for r in runs if r["parameters"].get("source") == str(source)), None)

    wait(lambda: review_run() is not None, 300, "the dossier's own review run to suspend")
    assert _queued(archive, truth.dossier_code)["flow_run_id"] == review_run()["id"]


def test_the_archive_check_deployment_fails_on_a_problem_and_lists_it(stack, tmp_path):
    from sohoa.storage import open_store

    store = open_store(str(tmp_path / "archive"))
    store.ensure_ready()
    store.put_bytes("dossiers/000.00.00.H49/1.001193/2026/000.00.00.H49-261201-0009/original.pdf", b"%PDF cut short")  # no manifest.json
    run_id = stack.run("archive-check/archive-check", archive=str(tmp_path / "archive"))
    stack.wait_state(run_id, {"Failed"}, 120)
    artifacts = stack.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    rows = json.loads(next(a for a in artifacts if a["key"] == "archive-check")["data"])
    assert [(r["kind"], r["dossier_id"]) for r in rows] == [("incomplete", "000.00.00.H49-261201-0009")]
