"""Shared fixtures: a real S3 server (ministack), real Prefect, real Tesseract, generated dossiers.

Prefect settings are read when Prefect is first imported, so the environment for the test
session (a private PREFECT_HOME, no telemetry, a generous embedded-server start-up timeout)
is set here, at import time, before any test module imports a flow.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="sohoa-test-prefect-")
os.environ.update({
    "PREFECT_HOME": _PREFECT_HOME,
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_LEVEL": "WARNING",
})
os.environ.pop("PREFECT_API_URL", None)

pytest_plugins = ["tests.s3_fixtures", "tests.fake_engine"]

REPO = Path(__file__).resolve().parent.parent


# the longest modules, run first so that the two workers (pytest-xdist, --dist loadfile, --no-loadscope-reorder)
# finish together instead of one running the learning test alone at the end (before xdist kept this order, the
# suite took 1,328-1,426 s; after, 718-799 s). Measured (--durations=0, summed per module, one run on an idle
# 2-core machine, 2026-12-02): learning 387 s, corpus 232, inbox 195, review_flow 117, e2e 98, faults 95,
# archive_layout 53, deployment 53, attacks 44, interrupts 27, real_quality 25, check 25, storage_hang 22,
# ocr_quality 21, page_cleanup 20, claims 19; all the others under 19 s
LONGEST_FIRST = ("test_learning.py", "test_corpus.py", "test_inbox.py", "test_review_flow.py", "test_e2e.py",
                 "test_faults.py", "test_archive_layout.py", "test_deployment.py", "test_attacks.py",
                 "test_interrupts.py", "test_real_quality.py", "test_check.py", "test_storage_hang.py",
                 "test_ocr_quality.py", "test_page_cleanup.py", "test_claims.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The fast tier is every test that is neither ``slow`` nor needs ``tesseract``: ``pytest -m fast``."""
    for item in items:
        if item.get_closest_marker("slow") is None and item.get_closest_marker("tesseract") is None:
            item.add_marker(pytest.mark.fast)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def pytest_configure(config: pytest.Config) -> None:
    """The fast tier (``pytest -m fast``) runs without Tesseract, and proves it: the program on the PATH
    fails and the library does not load, so a fast test that reached for Tesseract fails."""
    if config.getoption("markexpr") == "fast" or os.environ.get("SOHOA_TEST_NO_TESSERACT"):
        _forbid_tesseract()


def _forbid_tesseract() -> None:
    from tests.fake_engine import failing_tesseract

    folder = failing_tesseract(Path(tempfile.mkdtemp(prefix="sohoa-no-tesseract-")))
    os.environ["PATH"] = f"{folder}:{os.environ.get('PATH', '')}"
    (folder / "tessdata").mkdir()
    os.environ["TESSDATA_PREFIX"] = str(folder / "tessdata")  # no language data: /usr/bin/tesseract fails too
    from sohoa.kernel.errors import OcrError
    from sohoa.ocr import libtesseract

    def no_library():
        raise OcrError("engine_missing", "libtesseract is not available in the fast tier")

    libtesseract.load = no_library


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synth")


@pytest.fixture(scope="session")
def birth_pdf(synth_dir: Path):
    """A complete birth-registration dossier (receipt with QR and code, 5 pages), image-only PDF."""
    from sohoa_dev import synth

    out = synth_dir / "khai-sinh.pdf"
    truth = synth.make_dossier(out, procedure="1.001193", seed=0, fmt="pdf")
    return out, truth


@pytest.fixture
def settings(tmp_path: Path):
    from sohoa.kernel.settings import Settings

    return Settings(archive=str(tmp_path / "archive"), work=str(tmp_path / "work"))


@pytest.fixture
def work_store(settings):
    from sohoa.storage import open_store

    store = open_store(settings.work)
    store.ensure_ready()
    return store


@pytest.fixture
def counting_tesseract(tmp_path: Path) -> tuple[str, Path]:
    """A tesseract that logs each start, its arguments name the page: a test can count
    passes and tell which pages were read."""
    log = tmp_path / "tesseract-calls.log"
    wrapper = tmp_path / "bin" / "tesseract"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexec /usr/bin/tesseract "$@"\n')
    wrapper.chmod(0o755)
    log.touch()
    return str(wrapper), log
