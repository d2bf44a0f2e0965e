"""The OCR engines by name, and the one ``settings.ocr_engine`` chooses.

Two are built in, both Tesseract (sohoa/ocr/tesseract_engines.py): ``library``, warm engines in
this process, and ``cli``, the tesseract program per page; ``auto`` takes the library when it
loads, else the program. Tests install a fake engine (tests/fake_engine.py) with ``use`` and run
the whole OCR step without Tesseract. The interface itself is sohoa/ocr/base.py.
"""

from __future__ import annotations

import contextlib
import threading
from importlib import metadata
from collections.abc import Iterator

from sohoa.kernel.errors import OcrError
from sohoa.kernel.settings import Settings
from sohoa.ocr.base import OcrEngine, PageReading, PageToRead, TextLine
from sohoa.ocr.tesseract_engines import CliEngine, LibraryEngine

__all__ = ["AUTO", "OcrEngine", "PageReading", "PageToRead", "TextLine", "UnknownEngine", "choose", "get", "names",
           "register", "use"]

AUTO = "auto"
ENTRY_POINTS = "sohoa.ocr_engines"
AUTO_PREFERENCE = ("library", "cli")  # ``auto``: the first that can run here, else the last (its check says why)


class UnknownEngine(OcrError):
    """No engine is registered under the name asked for: a configuration mistake, said in one line."""

    def __init__(self, name: str, known: list[str]):
        super().__init__("engine_missing", f"no OCR engine named {name!r}; engines are: {', '.join([AUTO, *known])}")
        self.name, self.known = name, list(known)

    def __reduce__(self) -> tuple:  # pickled with a task's state: its own arguments, not OcrError's
        return type(self), (self.name, self.known)


_ENGINES: dict[str, OcrEngine] = {engine.name: engine for engine in (LibraryEngine(), CliEngine())}
_OVERRIDE: list[OcrEngine] = []  # innermost ``use`` last
_LOCK = threading.Lock()


def register(engine: OcrEngine) -> OcrEngine:
    """Make ``engine`` available under its name (replacing one of the same name)."""
    if engine.name == AUTO:
        raise ValueError(f"{AUTO!r} is not an engine name: it chooses one")
    with _LOCK:
        _ENGINES[engine.name] = engine
    return engine


def names() -> list[str]:
    with _LOCK:
        return sorted(_ENGINES)


def get(name: str) -> OcrEngine:
    """The engine registered as ``name``, or shipped by another distribution (entry points); UnknownEngine otherwise."""
    with _LOCK:
        found = _ENGINES.get(name)
    found = found or _plugin(name)
    if found is None:
        raise UnknownEngine(name, names())
    return found


def _plugin(name: str) -> OcrEngine | None:
    """An engine another installed distribution ships: an entry point of group ``sohoa.ocr_engines`` named as the
    engine, pointing at a class or factory taking no argument. Loaded on first use, then registered, so that
    ``SOHOA_OCR_ENGINE=<name>`` works in every process (the CLI, the worker) without code that registers it."""
    for entry in metadata.entry_points(group=ENTRY_POINTS, name=name):
        engine = entry.load()()
        if engine.name != name:
            raise UnknownEngine(name, names())
        return register(engine)
    return None


def choose(settings: Settings) -> OcrEngine:
    """The engine ``settings.ocr_engine`` names; ``auto`` is the library when it loads, else the program.
    Inside ``use(engine)``, that engine whatever the settings."""
    if _OVERRIDE:
        return _OVERRIDE[-1]
    if settings.ocr_engine != AUTO:
        return get(settings.ocr_engine)
    preferred = [get(name) for name in AUTO_PREFERENCE]
    return next((engine for engine in preferred if engine.available(settings)), preferred[-1])


@contextlib.contextmanager
def use(engine: OcrEngine) -> Iterator[OcrEngine]:
    """Within the block, ``choose`` gives ``engine`` (also registered under its name): how tests put a
    fake engine under the whole OCR step. Process-wide, not per thread."""
    with _LOCK:
        before = _ENGINES.get(engine.name)
    register(engine)
    _OVERRIDE.append(engine)
    try:
        yield engine
    finally:
        _OVERRIDE.remove(engine)
        with _LOCK:
            if before is None:
                _ENGINES.pop(engine.name, None)
            else:
                _ENGINES[engine.name] = before
