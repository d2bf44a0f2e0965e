"""``sohoa run`` stopped as a terminal and a supervisor stop it: one Ctrl-C (SIGINT to the whole foreground
process group), SIGTERM, SIGKILL. The real command in a session of its own, on a slow fake OCR engine that
the command finds by entry point (a distribution on PYTHONPATH), so OCR is running when the signal comes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from sohoa.ocr.base import PageReading, PageToRead
from sohoa.orchestration.embedded import LOG_ENV
from tests.fake_engine import FakeEngine

pytestmark = pytest.mark.slow  # a Prefect server per test
SOHOA = str(Path(sys.executable).parent / "sohoa")
REPO = Path(__file__).resolve().parent.parent
PAGE_S = 2.0  # each page read takes this long: the dossier is in OCR for a while
EXIT_WITHIN_S = 5.0


class SlowEngine(FakeEngine):
    """The fake engine, slowly: a page takes PAGE_S."""

    def __init__(self) -> None:
        super().__init__(name="slow-fake")

    def read(self, page: PageToRead, settings, timeout_s: float) -> PageReading:
        time.sleep(PAGE_S)
        return super().read(page, settings, timeout_s)


@pytest.fixture
def slow_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a ``sohoa run`` that reads with SlowEngine, marked so its processes can be found."""
    site = tmp_path / "site"
    info = site / "sohoa_slow_engine-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sohoa-slow-engine\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[sohoa.ocr_engines]\nslow-fake = tests.test_interrupts:SlowEngine\n")
    return {**os.environ, "PYTHONPATH": f"{site}:{REPO}", "SOHOA_OCR_ENGINE": "slow-fake", "SOHOA_JOBS": "1",
            "SOHOA_TEST_RUN": uuid.uuid4().hex, "SOHOA_ARCHIVE": str(tmp_path / "archive"), "SOHOA_WORK": str(tmp_path / "work")}


@pytest.fixture
def pages(tmp_path: Path) -> Path:
    """A folder of 8 page images with some ink on each (not blank pages)."""
    folder = tmp_path / "ho-so"
    folder.mkdir()
    for n in range(1, 9):
        image = Image.new("L", (850, 1100), 255)
        ImageDraw.Draw(image).rectangle((100, 100 + 40 * n, 700, 140 + 40 * n), fill=0)
        image.save(folder / f"page-{n}.png", dpi=(300, 300))
    return folder


def marked(env: dict[str, str]) -> list[int]:
    """The live processes started for this test's run (the CLI, the embedded server): found by their environment."""
    mark = f"SOHOA_TEST_RUN={env['SOHOA_TEST_RUN']}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and mark in (proc / "environ").read_bytes().split(b"\0") and not _zombie(proc):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _zombie(proc: Path) -> bool:
    return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([SOHOA, "run", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a terminal's foreground job


def read_until(process: subprocess.Popen, wanted: str, timeout: float = 240) -> list[str]:
    """Stderr lines up to the first one containing ``wanted``."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if wanted in line:
            return lines
    process.kill()
    raise AssertionError(f"no {wanted!r} on stderr: {''.join(lines)[-3000:]}")


def gone(env: dict[str, str], within: float) -> bool:
    deadline = time.monotonic() + within
    while marked(env):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.parametrize("signum,code,dossiers", [(signal.SIGINT, 130, 2), (signal.SIGTERM, 130, 1)])
def test_one_signal_to_the_group_during_ocr_stops_the_run_in_seconds_with_one_line(pages, slow_env, signum, code,
                                                                                  dossiers):
    """SIGINT on a batch (one flow run, a task per dossier), SIGTERM on one dossier (a flow run of its own)."""
    inputs = [pages]
    if dossiers == 2:
        inputs.append(pages.with_name("ho-so-2"))
        shutil.copytree(pages, inputs[1])
        Image.new("L", (850, 1100), 0).save(inputs[1] / "page-9.png", dpi=(300, 300))  # other content
    process = start(list(map(str, inputs)), slow_env)
    before = read_until(process, "OCR")  # a first page is read, the others are being read
    assert len(marked(slow_env)) == 2, before  # the CLI and its server (in a session of its own)
    os.killpg(process.pid, signum)
    sent = time.monotonic()
    stdout, stderr = process.communicate(timeout=30)
    took = time.monotonic() - sent
    assert process.returncode == code and took < EXIT_WITHIN_S, (process.returncode, took, stderr)
    said = [line for line in stderr.splitlines() if " | INFO " not in line]  # a page's progress may just make it
    assert len(said) == 1 and said[0].startswith(f"sohoa: interrupted: {dossiers} dossier(s) stopped"), stderr
    assert "capture" in said[0] and "run the same command again" in said[0]  # what finished (persisted), how to resume
    assert "Traceback" not in stderr and stdout == ""  # no false result
    assert gone(slow_env, within=1.0), "the embedded Prefect server outlived the command"


def test_sigkill_of_the_command_leaves_no_server_behind(pages, slow_env):
    process = start([str(pages)], slow_env)
    read_until(process, "starting the local Prefect server")
    deadline = time.monotonic() + 30
    while len(marked(slow_env)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(marked(slow_env)) == 2
    [server] = [pid for pid in marked(slow_env) if pid != process.pid]
    log = Path(_environ(server)[LOG_ENV])
    assert log.exists()
    process.kill()  # SIGKILL to the command alone: nothing of it runs to stop the server
    process.wait()
    assert gone(slow_env, within=8.0), "the embedded Prefect server was orphaned"
    assert not log.exists()  # nor its log file


def _environ(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)
