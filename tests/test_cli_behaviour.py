"""What a user sees of the command line: a first line at once, refusals without Prefect, result lines that say
what they mean, ``--version``, and help that matches the code. Fast: no Prefect server, no OCR."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import typing
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest

from sohoa import cli
from sohoa.kernel.errors import ExitCode
from sohoa.kernel.models import Decision, Outcome
from sohoa.services.evaluate import EvalReport

SOHOA = str(Path(sys.executable).parent / "sohoa")
FIRST_LINE_S = 1.0  # after the interpreter itself is up


def _interpreter_start_s() -> float:
    """How long this machine takes right now to start Python and import nothing: the baseline of the bound."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.monotonic() - started


def test_a_batch_that_is_all_refused_says_so_at_once_and_never_starts_prefect(tmp_path):
    (tmp_path / "empty.pdf").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("Ghi chú, không phải bản quét")
    home = tmp_path / "prefect-home"
    env = {**os.environ, "PREFECT_HOME": str(home), "SOHOA_WORK": str(tmp_path / "work")}
    baseline = _interpreter_start_s()
    started = time.monotonic()
    process = subprocess.Popen([SOHOA, "run", "--json", str(tmp_path / "empty.pdf"), str(tmp_path / "notes.txt"),
                                "--archive", str(tmp_path / "archive")], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    first = process.stderr.readline()
    took = time.monotonic() - started
    stdout, stderr = process.communicate(timeout=120)
    assert first == "sohoa: checking 2 input(s)\n" and took < baseline + FIRST_LINE_S, (first, took, baseline)
    assert process.returncode == ExitCode.refused, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [(line["status"], line["reason"]["code"]) for line in lines] == [("refused", "empty_file"),
                                                                           ("refused", "unsupported_type")]
    assert "Prefect" not in stderr and not (home / "prefect.db").exists()  # no server was started


def test_a_refusal_whose_quarantine_cannot_be_written_is_a_failed_result_line_not_a_traceback(tmp_path):
    (tmp_path / "empty.pdf").write_bytes(b"")
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "quarantine").write_text("")  # a file where the folder goes: every quarantine write fails
    done = subprocess.run([SOHOA, "run", "-q", "--json", str(tmp_path / "empty.pdf"), "--archive", str(tmp_path / "archive"),
                           "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=120)
    assert done.returncode == ExitCode.failed, done.stderr
    [line] = [json.loads(line) for line in done.stdout.splitlines()]
    assert line["status"] == "failed" and line["reason"]["message"].startswith("refused (empty_file: ")
    assert "not quarantined" in line["reason"]["message"] and "quarantine" not in line
    assert "Traceback" not in done.stderr and done.stderr == ""
    assert (tmp_path / "empty.pdf").exists()


@pytest.mark.parametrize("outcome,line", [
    (Outcome(input="a.pdf", status="duplicate", dossier_id="X-1", manifest="m.json", archived_status="passed", pages=5,
             documents=["phieu_tiep_nhan", "can_cuoc"]),
     "a.pdf: duplicate of X-1 (passed, 5 pages: phieu_tiep_nhan, can_cuoc) -> m.json\n"),
    (Outcome(input="a.pdf", status="duplicate", dossier_id="X-1", manifest="m.json"),  # its manifest could not be read
     "a.pdf: duplicate of X-1 -> m.json\n"),
])
def test_a_duplicate_line_says_what_the_archived_dossier_is_and_nothing_unknown(capsys, outcome, line):
    cli._print(outcome, as_json=False)
    assert capsys.readouterr().out == line


def test_the_version_is_the_installed_distributions(capsys):
    with pytest.raises(SystemExit) as leaving:
        cli.main(["--version"])
    assert leaving.value.code == 0 and capsys.readouterr().out == f"sohoa {metadata.version('sohoa')}\n"


def test_eval_requires_only_the_reports_scores_and_its_help_lists_them(tmp_path, capsys):
    scores = {name for name, field in EvalReport.model_fields.items() if float in typing.get_args(field.annotation)
              or field.annotation is float}
    assert set(cli.EVAL_METRICS) == scores
    assert cli.main(["eval", str(tmp_path), "--require", "results=1"]) == ExitCode.usage  # a field, not a score
    assert "unknown metric 'results'; metrics are page_accuracy" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    shown = capsys.readouterr().out
    assert all(name in shown for name in cli.EVAL_METRICS)


def test_review_takes_the_work_store_and_says_its_decision_in_a_line(capsys):
    args = cli._parser().parse_args(["review", "X-1", "--work", "/srv/work", "--approve"])
    assert args.work == "/srv/work" and not args.json
    decision = Decision(id="d1", by="Lê Thu Hằng", at="2026-12-02T10:00:00Z", action="reject", reason="Thiếu giấy")
    after = SimpleNamespace(dossier_id="X-1", revision=2, status="rejected", decisions=[decision])
    cli._print_decision(after, "m.json", as_json=False)
    cli._print_decision(after, "m.json", as_json=True)
    line, raw = capsys.readouterr().out.splitlines()
    assert line == "X-1: rejected, revision 2 (reject by Lê Thu Hằng: Thiếu giấy) -> m.json"
    assert json.loads(raw)["decision"]["by"] == "Lê Thu Hằng"


def test_an_interrupt_line_names_a_few_dossiers_and_counts_many():
    assert cli._said_finished({"in/a.pdf": ["capture", "ocr"], "b.pdf": []}) == "a.pdf: capture+ocr; b.pdf: no step"
    many = {f"{n}.pdf": ["capture", "ocr"] if n % 2 else [] for n in range(6)}
    assert cli._said_finished(many) == "3 no step, 3 up to ocr"
