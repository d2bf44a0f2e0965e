"""Reason codes are an enum and errors carry their exit code: a mistyped code fails where it is made,
and every command maps the same error to the same documented exit code, in one line."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from sohoa import cli
from sohoa.kernel.errors import (
    FAILURES,
    REFUSALS,
    ExitCode,
    InputRefused,
    OcrError,
    ReasonCode,
    SohoaError,
    UsageError,
    reason_code,
)
from sohoa.kernel.models import Outcome, Reason, Refusal
from sohoa.services.inbox import HEARTBEAT, DropOutcome, Heartbeat
from sohoa.services.quarantine import QuarantineReason, failed
from sohoa.storage import LocalStore, StorageError

REPO = Path(__file__).resolve().parent.parent
SOHOA = str(Path(sys.executable).parent / "sohoa")


# --- the enum ------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: InputRefused("not_fuond", "x"), lambda: OcrError("enigne_failed", "x")])
def test_a_mistyped_code_raises_where_the_error_is_made(make):
    with pytest.raises(ValueError, match=r"unknown reason code '\w+'; codes are not_found, "):
        make()


def test_a_code_of_the_wrong_kind_or_type_raises():
    with pytest.raises(ValueError, match="failure code, not a refusal"):
        InputRefused("engine_failed", "x")
    with pytest.raises(ValueError, match="refusal code, not a failure"):
        OcrError("corrupt_file", "x")
    with pytest.raises(TypeError, match="not int 403"):
        InputRefused(403, "x")  # type: ignore[arg-type]


@pytest.mark.parametrize("model", [Reason, Refusal])
def test_models_refuse_a_code_that_is_not_listed(model):
    with pytest.raises(ValidationError):
        model(code="not_fuond", message="x")


def test_refusals_and_failures_split_the_codes():
    assert REFUSALS | FAILURES == set(ReasonCode) and not REFUSALS & FAILURES
    assert all(code.is_refusal for code in REFUSALS) and not any(code.is_refusal for code in FAILURES)


@pytest.mark.parametrize("code", list(ReasonCode), ids=str)
def test_every_code_round_trips_through_the_models_as_its_plain_string(code):
    plain = str(code.value)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    models = [Reason(code=plain, message="m"), Refusal(code=plain, message="m"),
              Outcome(input="x", status="refused" if code.is_refusal else "failed", reason=Reason(code=plain, message="m")),
              QuarantineReason(code=plain, message="m", input_name="x", sha256=None, step="capture", at=at, files=[]),
              DropOutcome(drop={"station": "s", "key": "s/x.pdf", "kind": "file", "version": "1", "files": ["s/x.pdf"]},
                          status="failed", reason=plain, at=at)]
    for model in models:
        text = model.model_dump_json()
        again = type(model).model_validate_json(text)
        assert again == model and f'"{plain}"' in text
        assert json.dumps(model.model_dump(mode="json")) == json.dumps(json.loads(text))  # byte-identical as before
    assert json.dumps({"code": code}) == json.dumps({"code": plain})  # a member is its string, also for json.dumps


@pytest.mark.parametrize("error", [InputRefused("corrupt_file", "page 2 cannot be decoded"),
                                   OcrError("page_timeout", "tesseract gave up")], ids=type)
def test_coded_errors_survive_pickling(error):
    """Prefect pickles a failed task's exception with its state."""
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), again.code, again.message) == (type(error), error.code, error.message)


def test_only_our_codes_are_reason_codes():
    """Other libraries' ``.code`` (HTTP statuses, S3 error names) never end in a reason."""
    foreign = RuntimeError("boom")
    foreign.code = "AccessDenied"  # type: ignore[attr-defined]
    assert reason_code(foreign) is ReasonCode.processing_failed
    assert reason_code(OcrError("engine_missing", "x")) is ReasonCode.engine_missing
    assert failed("x.pdf", foreign).reason.code is ReasonCode.processing_failed


def test_every_code_written_in_the_source_is_listed():
    """A code in a branch no test reaches is still checked: every literal code given to a coded error."""
    written = set()
    for path in (REPO / "sohoa").rglob("*.py"):
        written |= set(re.findall(r'(?:InputRefused|OcrError)\(\s*"(\w+)"', path.read_text()))
    assert written and written <= set(ReasonCode), written - set(ReasonCode)


def test_the_readme_documents_every_reason_code_and_exit_code():
    readme = (REPO / "README.md").read_text()
    missing = [code for code in ReasonCode if f"`{code}`" not in readme]
    assert not missing, f"README does not name these reason codes: {missing}"
    table = readme.split("### Exit codes", 1)[1].split("###", 1)[0]
    assert {int(n) for n in re.findall(r"^\| (\d+) \|", table, re.M)} == {int(code) for code in ExitCode}


# --- exit codes ----------------------------------------------------------------------------

def test_each_error_carries_its_exit_code():
    from sohoa.domain.model import TooLittleData
    from sohoa.services.review import ReviewError

    assert StorageError("x").exit_code is ExitCode.failed and issubclass(StorageError, SohoaError)
    assert OcrError("engine_missing", "x").exit_code is ExitCode.failed
    assert InputRefused("too_large", "x").exit_code is ExitCode.refused
    assert ReviewError("x").exit_code is UsageError.exit_code is ExitCode.usage
    assert TooLittleData("x").exit_code is ExitCode.below_target and "stays with the rules" in TooLittleData("x").message


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "SOHOA_S3_ENDPOINT": "127.0.0.1:1", "SOHOA_S3_ACCESS_KEY": "test-access",
            "SOHOA_S3_SECRET_KEY": "test-secret-key", "SOHOA_WORK": str(tmp_path / "work"),
            "SOHOA_INDEX": str(tmp_path / "index.sqlite"), **extra}


def _commands(archive: str, tmp_path: Path) -> dict[str, list[str]]:
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(b"%PDF-1.4\n")
    return {"check": ["check", "--archive", archive], "report": ["report", "--archive", archive],
            "find": ["find", "--cccd", "123456789", "--archive", archive], "reviews": ["reviews", "--archive", archive],
            "watch": ["watch", "--status", archive.replace("/archive", "/inbox")],
            "run": ["run", "-q", "--json", str(scan), "--archive", archive]}


def _run_all(commands: dict[str, list[str]], env: dict[str, str]) -> dict[str, tuple[int, str, str]]:
    """Side by side: each waits mostly on the S3 client's retries."""
    running = {name: subprocess.Popen([SOHOA, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name, argv in commands.items()}
    done = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=180)
        done[name] = (process.returncode, stdout, stderr)
    return done


def test_every_command_says_an_unreachable_store_is_4_and_a_bad_store_url_2_in_one_line(tmp_path):
    """The same error, the same exit code, whatever the command: 4 when the store cannot be reached
    (after the S3 client's retries), 2 when its URL cannot be used (nothing contacted)."""
    unreachable = {f"{name} unreachable": argv for name, argv in _commands("s3://sohoa-errors/archive", tmp_path).items()}
    bad_url = {f"{name} bad url": argv for name, argv in _commands("ftp://nowhere/archive", tmp_path).items()}
    done = _run_all(unreachable | bad_url, _env(tmp_path))
    for name, (code, stdout, stderr) in done.items():
        expected, says = ((ExitCode.failed, "sohoa: cannot reach S3 endpoint 127.0.0.1:1") if name in unreachable else
                          (ExitCode.usage, "sohoa: configuration error: unsupported store URL"))
        assert code == expected, (name, code, stdout, stderr)
        assert stderr.startswith(says) and stderr.count("\n") == 1 and "Traceback" not in stderr, (name, stderr)
        assert stdout == "", (name, stdout)


def test_a_bad_setting_is_exit_2_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SOHOA_JOBS", "0")
    assert cli.main(["check", "--archive", str(tmp_path / "archive")]) == ExitCode.usage
    assert capsys.readouterr().err == "sohoa: configuration error: Settings jobs: Input should be greater than or equal to 1\n"


@pytest.mark.parametrize("age,expected", [(None, ExitCode.unhealthy), (timedelta(hours=1), ExitCode.unhealthy),
                                          (timedelta(seconds=1), ExitCode.ok)])
def test_watch_status_is_unhealthy_without_a_recent_scan(tmp_path, capsys, age, expected):
    inbox = LocalStore(tmp_path / "inbox")
    inbox.ensure_ready()
    if age is not None:
        beat = Heartbeat(at=(datetime.now(UTC) - age).isoformat(), scans=3, objects=0, taken=0, waiting=0)
        inbox.put_bytes(HEARTBEAT, beat.model_dump_json().encode(), content_type="application/json")
    assert cli.main(["watch", "--status", str(tmp_path / "inbox"), "--poll", "10"]) == expected
    out, err = capsys.readouterr()
    assert json.loads(out)["heartbeat"] == (None if age is None else beat.model_dump())
    assert (err.startswith("sohoa: unhealthy: ") and err.count("\n") == 1) if expected else err == ""


def test_an_interrupt_is_exit_130(monkeypatch, capsys):
    def interrupted(_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_check", interrupted)
    assert cli.main(["check"]) == ExitCode.interrupted
    assert capsys.readouterr().err == "sohoa: interrupted\n"


def test_eval_help_says_exit_5_for_an_unmet_requirement(capsys):
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    assert "exit 5 unless METRIC" in " ".join(capsys.readouterr().out.split())
