"""The attack set: hostile inputs and faults, each through ``sohoa run`` as a user (or an attacker) runs it.

Every attack must end as a typed outcome (archived, or refused/failed with a reason code other than
``processing_failed``), with the input intact, no traceback, and memory and time bounded. The inputs
run in one ``sohoa run`` batch, and each fault in a run of its own, under an address-space limit, so
a regression fails the test instead of taking the machine down. Used by tests/test_attacks.py, and to refresh docs/attacks.md:

    .venv/bin/python -m tests.attack_run > docs/attacks.md
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pikepdf
from PIL import Image

SOHOA = str(Path(sys.executable).parent / "sohoa")
ADDRESS_SPACE = 8 << 30  # the safety net; the bound asserted is MAX_RSS
MAX_RSS = 1536 << 20  # peak resident memory of one run, Prefect's embedded server aside (its own process)
MAX_SECONDS = 90.0
SECRET = b"root:$6$not-a-real-hash$:19000:0:99999:7:::\n"


@dataclass
class Attack:
    name: str
    what: str
    build: Callable[[Path], Path]
    expect: set[str]  # allowed "status" or "status:code"
    env: dict[str, str] = field(default_factory=dict)
    fault: Callable[[Path], dict[str, str]] | None = None  # returns extra environment (a fake program on PATH)


@dataclass
class Result:
    attack: Attack
    status: str
    code: str | None
    seconds: float
    peak_rss: int
    exit: int
    intact: bool
    traceback: bool
    leaked_secret: bool
    line: str
    own_time: bool = True  # False: the outcome has no duration of its own (refused at once); seconds is its run's

    @property
    def typed(self) -> bool:
        got = {self.status, f"{self.status}:{self.code}"}
        return bool(got & self.attack.expect) and self.code != "processing_failed"

    @property
    def ok(self) -> bool:
        return (self.typed and self.intact and not self.traceback and not self.leaked_secret
                and self.peak_rss < MAX_RSS and self.seconds < MAX_SECONDS)


# ------------------------------------------------------------------------------------------------ inputs

def _deflate(content: bytes) -> bytes:
    """Run-length deflate: a 400 MB run of spaces in about 400 KB, ten times faster than level 9."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    view = memoryview(content)
    return b"".join(packer.compress(view[i:i + (1 << 22)]) for i in range(0, len(content), 1 << 22)) + packer.flush()


def _one_page_pdf(path: Path, content: bytes, image: bool = True) -> Path:
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(595, 842))
    if image:
        raw = Image.new("L", (200, 200), 255).tobytes()
        page.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=pikepdf.Stream(
            pdf, zlib.compress(raw), Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image, Width=200, Height=200,
            ColorSpace=pikepdf.Name.DeviceGray, BitsPerComponent=8, Filter=pikepdf.Name.FlateDecode)))
    page.Contents = pdf.make_stream(b"")
    page.Contents.write(_deflate(content), filter=pikepdf.Name.FlateDecode)
    pdf.save(path)
    return path


def flate_bomb(folder: Path) -> Path:
    """One image and a content stream that inflates to 400 MB (of which the first operators draw the image)."""
    head = b"q 595 0 0 842 0 0 cm /Im0 Do Q\n"
    return _one_page_pdf(folder / "bomb.pdf", head + b" " * (400 << 20))


def operator_bomb(folder: Path) -> Path:
    """A content stream of 2 million tiny rectangles (about 30 MB inflated): the renderer's work, not its size."""
    return _one_page_pdf(folder / "rectangles.pdf", b"0 0 1 1 re f\n" * 2_000_000, image=False)


def pixel_bomb(folder: Path) -> Path:
    """A PNG whose header claims 100,000 x 100,000 pixels, a few KB on disk."""
    buffer = io.BytesIO()
    Image.new("1", (100_000, 1000)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[20:24] = (100_000).to_bytes(4, "big")  # IHDR height; the CRC no longer matches, as in a crafted file
    path = folder / "pixels.png"
    path.write_bytes(bytes(data))
    return path


def many_frames(folder: Path, frames: int = 10_000) -> Path:
    """A TIFF of 10,000 8 x 8 bilevel frames sharing one strip, written directly (PIL takes minutes)."""
    strip, first = 8, 8 + 8  # header, then the strip's 8 bytes, then the IFDs
    tags = [(256, 3, 8), (257, 3, 8), (258, 3, 1), (259, 3, 1), (262, 3, 1), (273, 4, strip), (278, 3, 8), (279, 4, 8)]
    size = 2 + 12 * len(tags) + 4
    body = bytearray(b"II*\x00" + first.to_bytes(4, "little") + bytes(8))
    for n in range(frames):
        following = first + (n + 1) * size if n + 1 < frames else 0
        body += len(tags).to_bytes(2, "little")
        for tag, kind, value in tags:
            body += tag.to_bytes(2, "little") + kind.to_bytes(2, "little") + (1).to_bytes(4, "little")
            body += value.to_bytes(2, "little") + bytes(2) if kind == 3 else value.to_bytes(4, "little")
        body += following.to_bytes(4, "little")
    path = folder / "frames.tif"
    path.write_bytes(bytes(body))
    return path


def many_images(folder: Path) -> Path:
    dossier = folder / "3000-pages"
    dossier.mkdir()
    buffer = io.BytesIO()
    Image.new("L", (16, 16), 255).save(buffer, "PNG")
    for n in range(3000):
        (dossier / f"{n:04d}.png").write_bytes(buffer.getvalue())
    return dossier


def link_to_secret(folder: Path) -> Path:
    secret = folder / "shadow"
    secret.write_bytes(SECRET)
    link = folder / "shadow.pdf"
    link.symlink_to(secret)
    return link


def link_in_folder(folder: Path) -> Path:
    dossier = folder / "pages"
    dossier.mkdir()
    Image.new("L", (400, 400), 255).save(dossier / "0001.png")
    secret = folder / "shadow"
    secret.write_bytes(SECRET)
    (dossier / "0002.png").symlink_to(secret)
    return dossier


def jpeg_with_pdf_comment(folder: Path) -> Path:
    path = folder / "photo.jpg"
    Image.new("RGB", (600, 400), "white").save(path, "JPEG", comment=b"%PDF-1.7 not a PDF")
    return path


def truncated_pdf(folder: Path) -> Path:
    whole = _one_page_pdf(folder / "whole.pdf", b"q 595 0 0 842 0 0 cm /Im0 Do Q\n").read_bytes()
    path = folder / "truncated.pdf"
    path.write_bytes(whole[: len(whole) // 2])
    return path


def empty(folder: Path) -> Path:
    path = folder / "empty.pdf"
    path.write_bytes(b"")
    return path


def zip_as_pdf(folder: Path) -> Path:
    path = folder / "archive.pdf"
    path.write_bytes(b"PK\x03\x04" + bytes(200))
    return path


def encrypted(folder: Path) -> Path:
    path = folder / "locked.pdf"
    pdf = pikepdf.new()
    pdf.add_blank_page()
    pdf.save(path, encryption=pikepdf.Encryption(owner="o", user="u"))
    return path


def hostile_name(folder: Path) -> Path:
    path = folder / "bad\nname\x1b[31m.png"
    Image.new("L", (400, 400), 255).save(path, "PNG")
    return path


def hanging_pdftoppm(folder: Path) -> dict[str, str]:
    """A pdftoppm that never answers: the page timeout must end it with page_timeout."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pdftoppm"
    fake.write_text('#!/bin/sh\nif [ "$1" = "-v" ]; then /usr/bin/pdftoppm -v; exit $?; fi\nexec sleep 600\n')
    fake.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def vector_page(folder: Path) -> Path:
    """A page with no image (rendered by pdftoppm), for the hanging-renderer fault."""
    return _one_page_pdf(folder / "vector.pdf", b"0 0 1 rg 100 100 300 300 re f\n", image=False)


ATTACKS = [
    Attack("flate_bomb", "PDF, one image + a content stream inflating to 400 MB", flate_bomb, {"refused:too_complex"}),
    Attack("operator_bomb", "PDF, 2 million rectangles in one content stream", operator_bomb,
           {"refused:too_complex", "passed", "needs_review", "rejected"}),
    Attack("pixel_bomb", "PNG claiming 100,000 x 100,000 pixels", pixel_bomb,
           {"refused:too_many_pixels", "refused:corrupt_file"}),
    Attack("many_frames", "TIFF of 10,000 frames", many_frames, {"refused:too_many_pages"}),
    Attack("many_images", "folder of 3,000 images", many_images, {"refused:too_many_pages"}),
    Attack("link_to_secret", "symbolic link shadow.pdf -> a secret file", link_to_secret, {"refused:unsafe_link"}),
    Attack("link_in_folder", "folder of pages with a link to a secret file", link_in_folder, {"refused:unsafe_link"}),
    Attack("jpeg_pdf_comment", "valid JPEG with %PDF- in a comment", jpeg_with_pdf_comment,
           {"passed", "needs_review", "rejected"}),
    Attack("truncated_pdf", "first half of a PDF", truncated_pdf,
           {"refused:corrupt_file", "passed", "needs_review", "rejected"}),
    Attack("empty", "empty file named .pdf", empty, {"refused:empty_file"}),
    Attack("zip_as_pdf", "ZIP named .pdf", zip_as_pdf, {"refused:extension_mismatch", "refused:unsupported_type"}),
    Attack("encrypted", "PDF with a user password", encrypted, {"refused:encrypted_pdf"}),
    Attack("hostile_name", "PNG named with a newline and a terminal escape", hostile_name,
           {"passed", "needs_review", "rejected", "refused:bad_name"}),
    Attack("pdftoppm_hangs", "a renderer that never answers (page timeout 5 s)", vector_page, {"failed:page_timeout"},
           env={"SOHOA_PAGE_TIMEOUT_S": "5"}, fault=hanging_pdftoppm),
]


# ------------------------------------------------------------------------------------------------ running

def _digest(path: Path) -> str:
    if path.is_symlink():
        return "link:" + os.readlink(path)
    if path.is_dir():
        return hashlib.sha256(b"".join(_digest(p).encode() for p in sorted(path.iterdir()))).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _leaked(archive: Path) -> bool:
    return any(SECRET in p.read_bytes() for p in archive.rglob("*") if p.is_file() and not p.is_symlink())


def run_attacks(attacks: list[Attack], root: Path) -> list[Result]:
    """The attacks without a fault in one ``sohoa run`` batch (as a station's folder of bad files would come),
    each attack with a fault in a run of its own. A batch's peak memory bounds each of its inputs' (so it is
    what each row shows); its time is each input's own ``duration_s``."""
    plain = [a for a in attacks if a.fault is None and not a.env]
    results = _run(plain, root / "batch") if plain else []
    for attack in attacks:
        if attack not in plain:
            results += _run([attack], root / attack.name)
    order = {a.name: i for i, a in enumerate(attacks)}
    return sorted(results, key=lambda r: order[r.attack.name])


def _run(attacks: list[Attack], folder: Path) -> list[Result]:
    folder.mkdir(parents=True)
    sources = {}
    for attack in attacks:
        (folder / attack.name).mkdir()
        sources[attack.name] = attack.build(folder / attack.name)
    before = {name: _digest(path) for name, path in sources.items()}
    env = {**os.environ, "SOHOA_ARCHIVE": str(folder / "archive"), "SOHOA_WORK": str(folder / "work")}
    for attack in attacks:
        env.update({**attack.env, **(attack.fault(folder) if attack.fault else {})})
    started = time.perf_counter()
    with open(folder / "stdout", "w+b") as out, open(folder / "stderr", "w+b") as err:
        process = subprocess.Popen([SOHOA, "run", "--json", "-q", *map(str, sources.values())], env=env, stdout=out,
                                   stderr=err, preexec_fn=_limit)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    leaked = (folder / "archive").exists() and _leaked(folder / "archive")
    return [Result(attack=attack, status=o.get("status", "no result"), code=(o.get("reason") or {}).get("code"),
                   seconds=round(o.get("duration_s") or seconds, 1), peak_rss=usage.ru_maxrss * 1024,
                   exit=process.returncode, intact=_digest(sources[attack.name]) == before[attack.name],
                   traceback="Traceback" in stderr, leaked_secret=leaked, line=stderr[-500:],
                   own_time=o.get("duration_s") is not None)
            for attack, o in zip(attacks, lines + [{}] * (len(attacks) - len(lines)), strict=True)]


def markdown(results: list[Result]) -> str:
    lines = ["| attack | input or fault | outcome | code | exit of its run | peak memory of its run | time | input intact | ok |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.attack.name} | {r.attack.what} | {r.status} | {r.code or ''} | {r.exit} | "
                     f"{r.peak_rss / (1 << 20):.0f} MB | {r.seconds if r.own_time else f'≤ {r.seconds}'} s | "
                     f"{'yes' if r.intact else 'NO'} | "
                     f"{'yes' if r.ok else 'NO'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="sohoa-attacks-") as tmp:
        print(markdown(run_attacks(ATTACKS, Path(tmp))))
