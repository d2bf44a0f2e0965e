"""Per-step settings: every setting a cached step reads is in its key, by construction.

Each cached step's key hashes its settings model whole (sohoa/kernel/settings.py). What is left to
forget is a field a step reads without it being in its model: these tests read the steps' code for
``settings.<field>`` and fail on any field that is neither in the step's model nor a runtime one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sohoa.kernel.keys import step_key
from sohoa.kernel.settings import RUNTIME, STEP_SETTINGS, Settings
from sohoa.steps import capture, classify, verify
from sohoa.steps import ocr as engine


PACKAGE = Path(__file__).resolve().parent.parent / "sohoa"
# the code each cached step runs that reads settings: its module, and for OCR the engines
READERS = {"capture": ["steps/capture.py", "ocr/pdftoppm.py"], "ocr": ["steps/ocr.py", "ocr/tesseract_engines.py"],
           "classify": ["steps/classify.py"], "verify": ["steps/verify.py"]}


def fields_read(relative: str, root: Path = PACKAGE) -> set[str]:
    text = (root / relative).read_text(encoding="utf-8")
    return set(re.findall(r"\bsettings\.([a-z_]+)\b", text)) & set(Settings.model_fields)


@pytest.mark.parametrize("step", sorted(READERS))
def test_a_step_reads_only_settings_of_its_own_model_or_runtime_ones(step):
    allowed = set(STEP_SETTINGS[step].model_fields) | RUNTIME
    assert {f for path in READERS[step] for f in fields_read(path)} - allowed == set()


def test_every_setting_is_a_steps_or_a_runtime_one():
    stepped = {name for model in STEP_SETTINGS.values() for name in model.model_fields}
    assert set(Settings.model_fields) - stepped - RUNTIME == set()
    assert stepped & RUNTIME == set()


def test_the_guard_sees_a_forgotten_field(tmp_path):
    """A step module that read a setting outside its model would be caught."""
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "capture.py").write_text("def f(settings):\n    return settings.min_type_confidence\n")
    read = fields_read("steps/capture.py", tmp_path)
    assert read - set(STEP_SETTINGS["capture"].model_fields) - RUNTIME == {"min_type_confidence"}


@pytest.mark.parametrize(("field", "value", "changed"), [
    ("render_dpi", 200, {"capture", "classify", "verify"}),
    ("title_lines", 5, {"classify", "verify"}),
    ("min_type_confidence", 0.5, {"verify"}),
    ("jobs", 7, set()),
])
def test_a_setting_reruns_its_step_and_those_after_it_only(field, value, changed):
    base = Settings(archive="a", work="w", ocr_engine="cli")
    other = base.model_copy(update={field: value})

    def keys(settings: Settings) -> dict[str, str]:
        from sohoa.kernel.models import SourceInfo

        info = SourceInfo(name="x.png", sha256="0" * 64, size=1, media_type="image/png")
        c = capture.capture_key(info, settings)
        k = classify.classify_key(step_key("ocr", engine.VERSION, {"fixed": True}, c), settings, None)
        return {"capture": c, "classify": k, "verify": verify.verify_key(k, settings)}

    before, after = keys(base), keys(other)
    assert {name for name in before if before[name] != after[name]} == changed
