"""Tesseract as a warm, in-process engine: its C API (``libtesseract.so.5``) through ctypes.

Why: the tesseract program loads its language models anew for every page (about 0.3 s of
CPU for ``vie+eng``, less for ``vie``) and costs a process start; a page itself takes 1 to 1.5 s.
An engine that stays loaded reads the same pixels with the same library and gives identical
text, words and text layer (tests/test_engines.py): measured on one page, 1.15 to 1.3 s of CPU
against 1.29 s for the program with ``vie``, and about 25% less with ``vie+eng``.

ctypes releases the GIL during every foreign call, so one engine per thread runs truly in
parallel. An engine is not thread-safe: ``EnginePool`` lends each engine to one thread at a
time, and its size is the number of pages read at once in this process (``SOHOA_JOBS``),
whatever the number of dossiers in flight. ``OMP_THREAD_LIMIT=1`` is set before the library
loads, as for the program: pages parallelize better than OpenMP threads inside a page.

The program stays available (``SOHOA_OCR_ENGINE=cli``, sohoa/ocr/tesseract.py) for systems without
the shared library, and as the process-isolated reference the benchmark measures against.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import os
import queue
import threading
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

from sohoa.kernel.errors import OcrError

_P = ctypes.c_void_p
_SIGNATURES: dict[str, tuple[list, object]] = {
    "TessVersion": ([], ctypes.c_char_p),
    "TessBaseAPICreate": ([], _P),
    "TessBaseAPIInit3": ([_P, ctypes.c_char_p, ctypes.c_char_p], ctypes.c_int),
    "TessBaseAPISetPageSegMode": ([_P, ctypes.c_int], None),
    "TessBaseAPISetImage": ([_P, _P, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int], None),
    "TessBaseAPISetSourceResolution": ([_P, ctypes.c_int], None),
    "TessBaseAPISetInputName": ([_P, ctypes.c_char_p], None),
    "TessBaseAPIRecognize": ([_P, _P], ctypes.c_int),
    "TessBaseAPIGetUTF8Text": ([_P], _P),
    "TessBaseAPIGetTsvText": ([_P, ctypes.c_int], _P),
    "TessBaseAPIClear": ([_P], None),
    "TessBaseAPIEnd": ([_P], None),
    "TessBaseAPIDelete": ([_P], None),
    "TessDeleteText": ([_P], None),
    "TessPDFRendererCreate": ([ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int], _P),
    "TessResultRendererBeginDocument": ([_P, ctypes.c_char_p], ctypes.c_int),
    "TessResultRendererAddImage": ([_P, _P], ctypes.c_int),
    "TessResultRendererEndDocument": ([_P], ctypes.c_int),
    "TessDeleteResultRenderer": ([_P], None),
    "TessMonitorCreate": ([], _P),
    "TessMonitorSetDeadlineMSecs": ([_P, ctypes.c_int], None),
    "TessMonitorDelete": ([_P], None),
}
LIBRARY_NAMES = ("libtesseract.so.5", "tesseract")


@lru_cache(maxsize=1)
def load() -> ctypes.CDLL:
    """The shared library with its functions typed; OcrError('engine_missing') when absent."""
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # read by OpenMP when the library initializes it
    for name in LIBRARY_NAMES:
        path = name if name.endswith(".5") else ctypes.util.find_library(name)
        if not path:
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for function, (args, result) in _SIGNATURES.items():
            getattr(lib, function).argtypes = args
            getattr(lib, function).restype = result
        return lib
    raise OcrError("engine_missing", "libtesseract.so.5 not found; install tesseract-ocr (or set SOHOA_OCR_ENGINE=cli)")


def available() -> bool:
    try:
        load()
    except OcrError:
        return False
    return True


@lru_cache(maxsize=1)
def library_path() -> Path | None:
    """The loaded library file (its size and time enter the OCR cache key)."""
    if not available():
        return None
    for line in Path("/proc/self/maps").read_text().splitlines():
        if "libtesseract" in line:
            return Path(line.split()[-1])
    return None


def version() -> str:
    return f"tesseract {load().TessVersion().decode()} (library)"


def _take_text(lib: ctypes.CDLL, pointer: int | None) -> str:
    if not pointer:
        return ""
    try:
        return ctypes.string_at(pointer).decode("utf-8", errors="replace")
    finally:
        lib.TessDeleteText(pointer)


class Engine:
    """One loaded TessBaseAPI. Not thread-safe: use it from one thread at a time (see EnginePool)."""

    def __init__(self, datapath: Path, languages: str, psm: int):
        self._lib = load()
        self.datapath = datapath
        self._api = self._lib.TessBaseAPICreate()
        if self._lib.TessBaseAPIInit3(self._api, str(datapath).encode(), languages.encode()) != 0:
            self._lib.TessBaseAPIEnd(self._api)
            self._lib.TessBaseAPIDelete(self._api)
            raise OcrError("language_missing", f"tesseract could not load language data {languages!r} from {datapath}")
        self._lib.TessBaseAPISetPageSegMode(self._api, psm)

    def read(self, gray: np.ndarray, dpi: int, layer_base: Path, timeout_s: float) -> tuple[str, str, Path]:
        """Text, TSV and the text-only PDF (``layer_base``.pdf) of one 8-bit grey image, in one pass."""
        lib, api = self._lib, self._api
        gray = np.ascontiguousarray(gray, dtype=np.uint8)
        lib.TessBaseAPISetImage(api, gray.ctypes.data, gray.shape[1], gray.shape[0], 1, gray.strides[0])
        lib.TessBaseAPISetSourceResolution(api, dpi)
        lib.TessBaseAPISetInputName(api, layer_base.name.encode())
        monitor = lib.TessMonitorCreate()
        try:
            lib.TessMonitorSetDeadlineMSecs(monitor, max(1, int(timeout_s * 1000)))
            if lib.TessBaseAPIRecognize(api, monitor) != 0:
                raise OcrError("page_timeout", f"tesseract gave up on {layer_base.name} (over {timeout_s:g} s)")
            text = _take_text(lib, lib.TessBaseAPIGetUTF8Text(api))
            tsv = _take_text(lib, lib.TessBaseAPIGetTsvText(api, 0))
            self._render_layer(layer_base)
        finally:
            lib.TessMonitorDelete(monitor)
            lib.TessBaseAPIClear(api)
        return text, tsv, layer_base.with_suffix(".pdf")

    def _render_layer(self, base: Path) -> None:
        """The page's invisible text as a one-page PDF, written by tesseract's own PDF renderer."""
        lib = self._lib
        renderer = lib.TessPDFRendererCreate(str(base).encode(), str(self.datapath).encode(), 1)
        try:
            ok = (lib.TessResultRendererBeginDocument(renderer, b"") and lib.TessResultRendererAddImage(renderer, self._api)
                  and lib.TessResultRendererEndDocument(renderer))
        finally:
            lib.TessDeleteResultRenderer(renderer)
        if not ok:
            raise OcrError("engine_failed", f"tesseract could not write the text layer of {base.name}")

    def close(self) -> None:
        if self._api:
            self._lib.TessBaseAPIEnd(self._api)
            self._lib.TessBaseAPIDelete(self._api)
            self._api = None


class EnginePool:
    """At most ``size`` engines, each lent to one thread at a time; created on first need, kept warm."""

    def __init__(self, datapath: Path, languages: str, psm: int, size: int):
        self.datapath, self.languages, self.psm, self.size = datapath, languages, psm, size
        self._idle: queue.LifoQueue[Engine] = queue.LifoQueue()
        self._created = 0
        self._lock = threading.Lock()
        self._closed = False
        self._warming: threading.Thread | None = None

    @contextlib.contextmanager
    def engine(self) -> Iterator[Engine]:
        engine = self._take()
        try:
            yield engine
        finally:
            self._give_back(engine)

    def _give_back(self, engine: Engine) -> None:
        """Back to the idle engines; ended at once when the pool has closed meanwhile (the process is exiting)."""
        with self._lock:
            if not self._closed:
                self._idle.put(engine)
                return
        engine.close()

    def _take(self) -> Engine:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            create = self._created < self.size
            if create:
                self._created += 1
        if not create:
            return self._idle.get()
        try:
            return Engine(self.datapath, self.languages, self.psm)
        except BaseException:
            with self._lock:
                self._created -= 1
            raise

    def warm(self) -> None:
        """Load the missing engines in the background (the C code runs beside Python's imports and capture)."""
        def load_all() -> None:
            with contextlib.suppress(Exception):  # a failure shows again, with its reason, on the first page
                while True:
                    with self._lock:
                        if self._created >= self.size or self._closed:
                            return
                        self._created += 1
                    try:
                        self._give_back(Engine(self.datapath, self.languages, self.psm))
                    except BaseException:
                        with self._lock:
                            self._created -= 1
                        raise

        self._warming = threading.Thread(target=load_all, name="sohoa-engine-warm-up", daemon=True)
        self._warming.start()

    def close(self, wait_s: float = 0.0) -> None:
        """End the idle engines, and those given back or loaded from now on. ``wait_s``: first let a warm-up that
        is loading an engine finish (at exit: an engine the warm-up thread was loading when the process ended
        was never ended, and the library printed ``WARNING! LEAK!`` for each of its models)."""
        with self._lock:
            self._closed = True
        warming = self._warming
        if wait_s and warming is not None and warming is not threading.current_thread():
            warming.join(wait_s)
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


_POOLS: dict[tuple[Path, str, int], EnginePool] = {}
_POOLS_LOCK = threading.Lock()


def pool(datapath: Path, languages: str, psm: int, size: int) -> EnginePool:
    """The process-wide pool for these settings: every dossier in this process shares its engines."""
    with _POOLS_LOCK:
        key = (datapath, languages, psm)
        found = _POOLS.get(key)
        if found is None or found.size != size:
            if found is not None:
                found.close()
            found = _POOLS[key] = EnginePool(datapath, languages, psm, size)
        return found


@atexit.register
def _close_pools() -> None:
    """End every engine before the library unloads (it reports loaded models as leaks otherwise), waiting up to
    30 s for one being loaded (a load takes under a second; measured: 0.3 s for ``vie``)."""
    with _POOLS_LOCK:
        for each in _POOLS.values():
            each.close(wait_s=30.0)
