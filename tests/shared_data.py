"""Where the read-only material beside the project lives (../shared), and a skip with the reason when it does not.

A clone elsewhere has no ../shared: its tests that measure on real material skip, saying what is missing,
instead of erroring (the README's test command passes on a fresh clone).
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


def shared_folder(relative: str) -> Path:
    """``../shared/<relative>``, or skip the test: the material is kept outside the repository."""
    folder = SHARED / relative
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (../shared/{relative} is kept outside the repository; a clone elsewhere has none)")
    return folder
