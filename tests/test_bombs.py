"""Decompression bombs and hostile inputs: each is a typed refusal, within bounded memory and time.

Each bomb is built here, then captured in a subprocess under an address-space limit (``prlimit``), so a
regression fails fast with a MemoryError instead of eating the machine; the subprocess reports its outcome,
its peak memory (its own and its children's: pdftoppm) and its time. Measured with the capture before these
limits (the same bombs and driver, under 4 GB of address space): both content-stream bombs were still parsing
after 100 s (the issue's 409 KB one had passed 8 GB without a limit); the image whose data inflates to 256 MB
was captured (589 MB, 7 s); the zTXt bomb was ``corrupt_file``; the 10,000-frame TIFF and the 3,000-image
folder were refused after 2,000 pages had been captured (3 s each). Now each is refused in under a second of
its own, under 100 MB (pdftoppm under 320 MB for the 11 MB one).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pikepdf
import pytest
from PIL import Image

from sohoa.kernel.errors import InputRefused
from sohoa.kernel.settings import Settings
from sohoa.services import quarantine as quarantining
from sohoa.steps import capture as capturing
from sohoa.storage import open_store

ROOT = Path(__file__).resolve().parent.parent
ADDRESS_SPACE = 2 << 30  # the capture process (about 520 MB of it is Python, OpenCV and pikepdf before any input)
PEAK_BOUND_MB = 700  # resident, capture and pdftoppm each; an ordinary page takes about 150 MB
TIME_BOUND_S = 30.0


# --- building the bombs ---------------------------------------------------------------------------


def deflated(pattern: bytes, size: int) -> bytes:
    """``pattern`` repeated to ``size`` bytes as a zlib stream, never held inflated: one megabyte deflated on its
    own (a full flush: nothing refers back past it), that segment repeated, then the end and the checksum."""
    block = pattern * ((1 << 20) // len(pattern))
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    count, checksum = size // len(block), 1
    for _ in range(count):
        checksum = zlib.adler32(block, checksum)
    return b"\x78\xda" + segment * count + b"\x03\x00" + struct.pack(">I", checksum)


def _save(pdf: pikepdf.Pdf, path: Path) -> Path:
    pdf.save(path, stream_decode_level=pikepdf.StreamDecodeLevel.none)  # keep the bomb's own Flate data
    return path


def _flate(pdf: pikepdf.Pdf, data: bytes, **entries) -> pikepdf.Stream:
    stream = pikepdf.Stream(pdf, data)
    stream.Filter = pikepdf.Name.FlateDecode
    for key, value in entries.items():
        stream[f"/{key}"] = value
    return pdf.make_indirect(stream)


def _jpeg(size: tuple[int, int] = (85, 110)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 200).save(buffer, "JPEG")
    return buffer.getvalue()


def content_bomb(path: Path, inflated: int) -> Path:
    """One full-page image, then a content stream of ``q`` operators inflating to ``inflated`` bytes."""
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(612, 792))
    image = pikepdf.Stream(pdf, _jpeg())
    image.Type, image.Subtype, image.Filter = pikepdf.Name.XObject, pikepdf.Name.Image, pikepdf.Name.DCTDecode
    image.Width, image.Height, image.BitsPerComponent, image.ColorSpace = 85, 110, 8, pikepdf.Name.DeviceGray
    page.obj.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image))
    draw = pdf.make_stream(b"q 612 0 0 792 0 0 cm /Im0 Do Q\n")
    page.obj.Contents = pikepdf.Array([draw, _flate(pdf, deflated(b"q\n", inflated))])
    return _save(pdf, path)


def image_data_bomb(path: Path) -> Path:
    """A 100x100 grey image whose Flate data inflates to 256 MB."""
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(72, 72))
    image = _flate(pdf, deflated(b"\0", 256 << 20), Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image,
                   Width=100, Height=100, BitsPerComponent=8, ColorSpace=pikepdf.Name.DeviceGray)
    page.obj.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image))
    page.obj.Contents = pdf.make_stream(b"q 72 0 0 72 0 0 cm /Im0 Do Q")
    return _save(pdf, path)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(path: Path) -> Path:
    """A PNG that says it is 100,000 x 100,000 pixels (10 G): a header and one tiny IDAT."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1000))
                     + _png_chunk(b"IEND", b""))
    return path


def text_chunk_png(path: Path) -> Path:
    """A small page with a zTXt comment inflating to 64 MB."""
    buffer = io.BytesIO()
    Image.new("L", (850, 1100), 255).save(buffer, "PNG", dpi=(100, 100))
    png = buffer.getvalue()
    path.write_bytes(png[:33] + _png_chunk(b"zTXt", b"Comment\0\0" + deflated(b"\0", 64 << 20)) + png[33:])
    return path


def many_frame_tiff(path: Path, frames: int) -> Path:
    """A TIFF of ``frames`` 1x1 frames, written directly (a chain of minimal image directories)."""
    entries = [(256, 4, 1), (257, 4, 1), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8), (278, 4, 1), (279, 4, 1)]
    ifd_size = 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", 9) + b"\xff")  # the frames share one white pixel at offset 8
    for n in range(frames):
        following = 0 if n == frames - 1 else len(out) + ifd_size
        out += struct.pack("<H", len(entries))
        out += b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in entries)
        out += struct.pack("<I", following)
    path.write_bytes(bytes(out))
    return path


def image_folder(path: Path, count: int) -> Path:
    path.mkdir()
    buffer = io.BytesIO()
    Image.new("L", (85, 110), 255).save(buffer, "PNG")
    (path / "page-1.png").write_bytes(buffer.getvalue())
    for n in range(2, count + 1):  # links to one file: writing 3,000 files took 8 s on the CI disk
        os.link(path / "page-1.png", path / f"page-{n}.png")
    return path


# --- capturing one in a bounded subprocess --------------------------------------------------------------

DRIVER = """
import json, resource, sys, time
from pathlib import Path
from sohoa.kernel.errors import InputRefused
from sohoa.kernel.settings import Settings
from sohoa.steps import capture
from sohoa.storage import open_store
path, work = Path(sys.argv[1]), sys.argv[2]
settings = Settings(work=work, archive=work + "-archive")
store = open_store(work)
store.ensure_ready()
started = time.perf_counter()
try:
    info = capture.describe_source(path, settings)
    pages = len(capture.capture(path, info, store, settings, capture.capture_key(info, settings)).pages)
    outcome = {"status": "captured", "pages": pages}
except InputRefused as refusal:
    outcome = {"status": "refused", "code": str(refusal.code), "message": refusal.message}
except MemoryError:
    outcome = {"status": "MemoryError"}
outcome["seconds"] = round(time.perf_counter() - started, 2)
# VmHWM: this process's own peak since exec (ru_maxrss would keep the forking pytest worker's, hundreds of MB
# once it has loaded OCR engines: Linux carries the old image's peak across exec)
hwm = [line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:")]
outcome["peak_mb"] = int(hwm[0].split()[1]) // 1024
outcome["children_peak_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
outcome["stored"] = len(list(store.list("pages/")))
print(json.dumps(outcome))
"""


def bounded_capture(path: Path, work: Path) -> dict:
    """Capture ``path`` in a subprocess limited to ``ADDRESS_SPACE``: its outcome, peak memory and time."""
    args = ["prlimit", f"--as={ADDRESS_SPACE}", "--", sys.executable, "-c", DRIVER, str(path), str(work)]
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ})
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\n{path.name}: {outcome} ({time.perf_counter() - started:.1f} s with start-up)")
    return outcome


BOMBS = {  # name -> (builder, the refusal)
    "content-400MB.pdf": (lambda p: content_bomb(p, 400 << 20), "too_complex"),
    "content-11MB.pdf": (lambda p: content_bomb(p, 11 << 20), "too_complex"),  # under the limit: pdftoppm's memory
    "image-data-256MB.pdf": (image_data_bomb, "too_complex"),
    "huge.png": (huge_png, "too_many_pixels"),
    "ztxt.png": (text_chunk_png, "too_complex"),
    "frames-10000.tif": (lambda p: many_frame_tiff(p, 10_000), "too_many_pages"),
    "folder-3000": (lambda p: image_folder(p, 3000), "too_many_pages"),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_a_bomb_is_refused_within_bounded_memory_and_time(name, tmp_path):
    build, code = BOMBS[name]
    path = build(tmp_path / name)
    outcome = bounded_capture(path, tmp_path / "work")
    assert (outcome["status"], outcome.get("code")) == ("refused", code), outcome
    assert outcome["stored"] == 0, "pages stored before the refusal"
    assert outcome["peak_mb"] < PEAK_BOUND_MB and outcome["children_peak_mb"] < PEAK_BOUND_MB, outcome
    assert outcome["seconds"] < TIME_BOUND_S, outcome


def test_page_counts_are_refused_before_capture_starts(tmp_path):
    """describe_source (admission: before any step, and before the CLI starts Prefect) counts the pages."""
    settings = Settings(max_pages=5)
    pdf = pikepdf.new()
    for _ in range(6):
        pdf.add_blank_page()
    inputs = [_save(pdf, tmp_path / "six.pdf"), many_frame_tiff(tmp_path / "six.tif", 6), image_folder(tmp_path / "six", 6)]
    for path in inputs:
        with pytest.raises(InputRefused) as refused:
            capturing.describe_source(path, settings)
        assert refused.value.code == "too_many_pages", path
    assert capturing.count_pages(tmp_path / "six.tif", "image/tiff", Settings(max_pages=6)) == 6
    assert capturing.tiff_frames(tmp_path / "six.tif", 3) == 3  # the walk stops where the count is known


def test_a_looping_tiff_frame_chain_is_corrupt(tmp_path):
    path = many_frame_tiff(tmp_path / "loop.tif", 2)
    data = bytearray(path.read_bytes())
    data[-4:] = struct.pack("<I", 9)  # the last frame points back at the first
    path.write_bytes(bytes(data))
    with pytest.raises(InputRefused) as refused:
        capturing.describe_source(path, Settings())
    assert refused.value.code == "corrupt_file"


def test_a_content_stream_is_measured_without_inflating_it_whole():
    from sohoa.ocr import pdf as pdf_streams

    raw = deflated(b"q\n", 64 << 20)
    assert pdf_streams.inflated_size(raw, 1 << 20) <= (1 << 20) + (1 << 16)  # stopped one chunk past the limit
    assert pdf_streams.inflated_size(raw, 128 << 20) == 64 << 20
    assert pdf_streams.inflated_size(raw[: len(raw) // 2], 128 << 20) > 0  # damaged: what inflated before the cut


def test_other_filters_are_measured_through_qpdf(tmp_path):
    from sohoa.ocr import pdf as pdf_streams

    pdf = pikepdf.new()
    page = pdf.add_blank_page()
    stream = pikepdf.Stream(pdf, b"q Q " * 1000)
    page.obj.Contents = pdf.make_indirect(stream)
    pdf.save(tmp_path / "plain.pdf")
    with pikepdf.open(tmp_path / "plain.pdf", allow_overwriting_input=True) as again:
        contents = again.pages[0].obj.Contents
        contents.write(contents.read_bytes().hex().encode() + b">", filter=pikepdf.Name.ASCIIHexDecode)
        again.save(tmp_path / "hex.pdf", compress_streams=False, stream_decode_level=pikepdf.StreamDecodeLevel.none)
    with pikepdf.open(tmp_path / "hex.pdf") as hexed:
        contents = hexed.pages[0].obj.Contents
        assert pdf_streams.stream_filters(contents) == ["/ASCIIHexDecode"]
        assert pdf_streams.decoded_size(tmp_path / "hex.pdf", contents, 1 << 20) == 4000
        assert pdf_streams.decoded_size(tmp_path / "hex.pdf", contents, 100) > 100


# --- links, types, quarantine ----------------------------------------------------------------------------


def test_a_link_given_as_the_input_is_refused_and_never_copied(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:$6$hash:19000:0:99999:7:::\n")
    link = tmp_path / "shadow.pdf"
    link.symlink_to(secret)
    with pytest.raises(InputRefused) as refused:
        capturing.describe_source(link, Settings())
    assert refused.value.code == "unsafe_link"
    store = open_store(tmp_path / "archive")
    store.ensure_ready()
    quarantining.refuse(store, link, refused.value)
    kept = [info.key for info in store.list("quarantine/")]
    assert [k.rsplit("/", 1)[-1] for k in kept] == ["reason.json"], kept
    reason = quarantining.QuarantineReason.model_validate_json(store.get_bytes(kept[0]))
    assert (reason.code, reason.files, reason.sha256, reason.size) == ("unsafe_link", [], None, None)


def test_a_jpeg_with_pdf_in_its_comment_is_a_jpeg(tmp_path):
    path = tmp_path / "scan.jpg"
    Image.new("L", (850, 1100), 255).save(path, "JPEG", comment=b"made by %PDF-1.7 tools", dpi=(100, 100))
    assert capturing.describe_source(path, Settings()).media_type == "image/jpeg"
    junk_first = tmp_path / "junk.pdf"
    pdf = pikepdf.new()
    pdf.add_blank_page()
    pdf.save(junk_first)
    junk_first.write_bytes(b"\r\n garbage before the header\n" + junk_first.read_bytes())
    assert capturing.sniff_media_type(junk_first) == "application/pdf"


def test_quarantine_keeps_one_bounded_entry_per_input_with_its_name_and_sha256(tmp_path):
    store = open_store(tmp_path / "archive")
    store.ensure_ready()
    bad = tmp_path / "Hồ sơ\x1b 1.pdf"
    bad.write_bytes(b"not a pdf")
    big = tmp_path / "big.pdf"
    big.write_bytes(b"%PDF-1.7\n" + b"\0" * 5000)
    for _ in range(2):  # a retry of the same input
        quarantining.quarantine(store, bad, code="unsupported_type", message="m", step="capture")
    quarantining.quarantine(store, big, code="too_large", message="m", step="capture")
    quarantining.quarantine(store, big, code="corrupt_file", message="m", step="capture", max_copy_bytes=4096)
    reasons = {r.input_name.rsplit("/", 1)[-1]: r for r in (quarantining.QuarantineReason.model_validate_json(
        store.get_bytes(i.key)) for i in store.list("quarantine/") if i.key.endswith("reason.json"))}
    assert sorted(reasons) == sorted([quarantining.safe_name(bad.name), "big.pdf"])  # escaped: no control character
    kept = reasons[quarantining.safe_name(bad.name)]
    assert kept.sha256 == hashlib.sha256(b"not a pdf").hexdigest() and kept.times == 2
    assert [f.split("/input/")[1] for f in kept.files] == ["0001-Ho_so_1.pdf"]  # a plain key; the name in the reason
    assert store.get_bytes(kept.files[0]) == b"not a pdf"
    large = reasons["big.pdf"]
    assert (large.files, large.inputs[0].size, large.times, large.code) == ([], 5009, 2, "corrupt_file")
    assert large.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()


# --- programs behind the page time limit, engines ended at exit --------------------------------------------


def test_a_pdftoppm_whose_child_hangs_is_killed_at_the_page_timeout(tmp_path, monkeypatch):
    """The child keeps pdftoppm's pipes open: killing pdftoppm alone left the wait blocked for 30 s."""
    from sohoa.kernel.errors import OcrError

    program = tmp_path / "bin" / "pdftoppm"
    program.parent.mkdir()
    program.write_text('#!/bin/sh\n[ "$1" = -v ] && { echo "pdftoppm version 0.0" >&2; exit 0; }\nsleep 30\n')
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{program.parent}:/usr/bin:/bin")
    pdf = pikepdf.new()
    pdf.add_blank_page().obj.Contents = pdf.make_stream(b"0 0 1 rg 18 18 72 36 re f")
    path = _save(pdf, tmp_path / "drawn.pdf")
    settings = Settings(work=str(tmp_path / "work"), page_timeout_s=0.5)
    store = open_store(settings.work)
    store.ensure_ready()
    info = capturing.describe_source(path, settings)
    started = time.perf_counter()
    with pytest.raises(OcrError) as raised:
        capturing.capture(path, info, store, settings, capturing.capture_key(info, settings))
    assert raised.value.code == "page_timeout" and "page 1" in str(raised.value)
    assert time.perf_counter() - started < 5


@pytest.mark.tesseract
def test_warm_library_engines_are_ended_at_exit_without_leak_warnings():
    """The warm-up thread was still loading an engine when the process ended: the library printed
    ``WARNING! LEAK!`` for each of that engine's models."""
    script = """
import numpy as np, tempfile
from pathlib import Path
from sohoa.kernel.settings import Settings
from sohoa.ocr.tesseract_engines import LibraryEngine
settings, engine = Settings(jobs=2), LibraryEngine()
engine.warm_up(settings)
gray = np.full((200, 400), 255, np.uint8)
gray[80:120, 50:350] = 0
with engine._pool(settings).engine() as loaded:
    loaded.read(gray, 300, Path(tempfile.mkdtemp()) / "layer", 10.0)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "LEAK" not in done.stderr, done.stderr[-2000:]


def test_resources_that_refer_to_themselves_are_weighed_once(tmp_path):
    """A Type 3 font whose resources hold itself and two forms that draw each other: weighing ends."""
    from sohoa.ocr import pdf as pdf_streams

    pdf = pikepdf.new()
    page = pdf.add_blank_page()
    glyphs = pikepdf.Dictionary(a=pdf.make_stream(b"0 0 m"))
    font = pdf.make_indirect(pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type3, CharProcs=glyphs))
    font.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font))
    first, second = pdf.make_stream(b"/F2 Do"), pdf.make_stream(b"/F1 Do")
    first.Subtype = second.Subtype = pikepdf.Name.Form
    first.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(F2=second))
    second.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(F1=first))
    page.obj.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font), XObject=pikepdf.Dictionary(X=first))
    page.obj.Contents = pdf.make_stream(b"/X Do")
    path = _save(pdf, tmp_path / "loops.pdf")
    with pikepdf.open(path) as again:
        weight = pdf_streams.weigh_page(path, again.pages[0], 1 << 20)
    assert weight.content_bytes == len(b"/X Do" + b"/F2 Do" + b"/F1 Do" + b"0 0 m")
