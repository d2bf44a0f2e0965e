"""The real-document evaluation set: real Vietnamese pages with ground truth, from ../shared/corpus/real-vi.

    .venv/bin/python bench/real_set.py [--cache DIR] [--print-truth NAME]   # build it and list the pages

35 pages, 4 kinds, from 4 source repositories (docs/real-set.md):

``notice-scan``  the three 300 dpi JPEG scans of ``transcribed/`` with a person's transcription.
``official-letter-300dpi``  born-digital letters and decrees (``born-digital/``) rasterized by
                 pdftoppm at 300 dpi, colour, as a clean flatbed scan; truth from the text layer.
``official-letter-200dpi-degraded``  the same pages at 200 dpi through a bilevel-scanner look: a
                 small tilt, blur, noise, then a fixed threshold (CCITT G4 TIFF, as those scanners write).
``photo``        in-house simulated phone photos of a few of those pages: perspective, uneven light,
                 a desk around the sheet, JPEG without dpi metadata. Made here, not photographed.

Truth of the born-digital pages is the page's own text layer (``pdftotext -bbox-layout``), put in
the reading order a person's transcription uses (``transcribed/*.txt``): the e-signature box first
(it is printed above the header), then, where the page has two columns side by side (the national
header, the "Nơi nhận" / signer block), the whole left column before the right one; everything else
top to bottom. See ``ordered_text``.

Every rendered page is cached under the caller's folder and made with fixed seeds, so two builds give
the same bytes. Nothing is ever written into the corpus folder (it is read-only).
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus" / "real-vi"

# repository @ commit each file came from (the corpus README's "Sources")
SOURCES = {
    "dhdl": "Theodore0502/OCR_Scanner@fb7e77a7",
    "qngai": "QuangDuyxyz/OCR_LOCAL_VBHC@61aa1188",
    "nd": "hwolp/RAG_TongHopVBHC@4a80deea",
    "vktqg": "quocanh83/QLVB@466769ba",
}
# born-digital pages used: every page of the short letters, three of the 55-page decree
# (the header page, one body page, the signature page)
BORN_DIGITAL = {
    "qngai-05-tb-signed.pdf": (1, 2),
    "qngai-btttt-cv-signed.pdf": (1,),
    "qngai-vht507-tb-signed.pdf": (1, 2),
    "qngai-vht534-tb-signed.pdf": (1, 2, 3, 4),
    "vktqg-185-cv-stamp.pdf": (1,),  # page 2 is a table: no single reading order
    "nd-45-2026-55p.pdf": (1, 2, 55),
}
PHOTOGRAPHED = {  # (file, page) also made into a simulated phone photo: each document's first page (of the
    # 4-page notice its page 2, a full body page: the first pages already give five headers)
    ("qngai-05-tb-signed.pdf", 1), ("qngai-btttt-cv-signed.pdf", 1), ("qngai-vht507-tb-signed.pdf", 1),
    ("qngai-vht534-tb-signed.pdf", 2), ("vktqg-185-cv-stamp.pdf", 1), ("nd-45-2026-55p.pdf", 1),
}
KINDS = ("notice-scan", "official-letter-300dpi", "official-letter-200dpi-degraded", "photo")
_E_SIGNATURE = re.compile(r"\d{2}\.\d{2}\.\d{4} \d{2}:\d{2}:\d{2}|Ký bởi|@[a-z0-9.-]+\.vn")


class MissingCorpus(FileNotFoundError):
    """The corpus folder is absent: it is kept outside the repository (a clone elsewhere has none)."""


@dataclass(frozen=True)
class RealPage:
    name: str  # e.g. qngai-05-tb-signed-p1-300dpi
    kind: str
    source: str  # repository@commit of the original file
    path: Path  # the image handed to capture
    truth: str


@dataclass(frozen=True)
class _Block:
    x0: float
    y0: float
    x1: float
    y1: float
    lines: tuple[str, ...]

    @property
    def center(self) -> float:
        return (self.x0 + self.x1) / 2

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def source_of(name: str) -> str:
    return SOURCES[name.split("-")[0]]


def _seed(*parts: object) -> int:
    """A fixed seed per page and variant (crc32 of its name): the same pixels on every build."""
    return zlib.crc32("/".join(map(str, parts)).encode())


# ---------------------------------------------------------------------------------------------
# Truth in reading order
# ---------------------------------------------------------------------------------------------
def text_blocks(pdf: Path, page: int) -> tuple[float, list[_Block]]:
    """The page width and poppler's text blocks (``pdftotext -bbox-layout``), each with its lines."""
    xml = subprocess.run(["pdftotext", "-f", str(page), "-l", str(page), "-bbox-layout", str(pdf), "-"],
                         capture_output=True, check=True, timeout=60).stdout
    root = ET.fromstring(re.sub(rb"<!DOCTYPE[^>]*>", b"", xml))
    ns = {"h": "http://www.w3.org/1999/xhtml"}
    page_el = root.find(".//h:page", ns)
    blocks = []
    for b in page_el.iterfind(".//h:block", ns):
        lines = tuple(" ".join(w.text or "" for w in ln.iterfind("h:word", ns)) for ln in b.iterfind("h:line", ns))
        lines = tuple(" ".join(t.split()) for t in lines if t.strip())
        if lines:
            blocks.append(_Block(*(float(b.get(k)) for k in ("xMin", "yMin", "xMax", "yMax")), lines))
    return float(page_el.get("width")), blocks


def _beside(a: _Block, b: _Block) -> bool:
    """Side by side: overlapping heights, disjoint widths (the two header columns, "Nơi nhận" and the signer)."""
    return min(a.y1, b.y1) > max(a.y0, b.y0) and (a.x1 < b.x0 or b.x1 < a.x0)


def _bands(blocks: list[_Block], middle: float, gap: float) -> list[list[_Block]]:
    """Blocks top to bottom, grouped into bands: a block joins the band above when it stands beside one of
    its blocks, or when the band has two columns and the block lies in the left one (ends before the right
    column starts), at most ``gap`` below."""
    bands: list[list[_Block]] = []
    for b in sorted(blocks, key=lambda b: (b.y0, b.x0)):
        band = bands[-1] if bands else []
        columns = any(_beside(a, k) for i, a in enumerate(band) for k in band[i + 1:])
        right = min((k.x0 for k in band if k.center >= middle), default=0.0)
        below_left = columns and b.x1 < right and b.y0 <= max(k.y1 for k in band) + gap
        if band and (any(_beside(b, k) for k in band) or below_left):
            band.append(b)
        else:
            bands.append([b])
    return bands


def ordered_text(width: float, blocks: list[_Block], gap: float = 24.0) -> str:
    """The page's text in the transcriptions' reading order.

    The e-signature box (agency, e-mail, signing time), printed in the top right corner above the header,
    comes first. Then bands top to bottom (``_bands``); in a band, every block centred left of the page's
    middle before the others, each side top to bottom. So the national header reads agency,
    Số (and the trích yếu "V/v …" under it, which joins the left column when it starts within ``gap``,
    24 pt or about 1.5 lines, of the band), then Quốc hiệu, tiêu ngữ, place and date, as the person's three
    transcriptions write it; the closing block reads "Nơi nhận" and its list, then the signer. A centred
    line below the header ("Kính gửi", the title) and a signer's name far below the list are bands of
    their own, in their place top to bottom.
    """
    signature = [b for b in blocks if _E_SIGNATURE.search(b.text)]
    out = [b.text for b in signature]
    for band in _bands([b for b in blocks if b not in signature], width / 2, gap):
        out += [b.text for b in sorted(band, key=lambda b: (b.center >= width / 2, b.y0, b.x0))]
    return "\n".join(out)


def page_truth(pdf: Path, page: int) -> str:
    return ordered_text(*text_blocks(pdf, page))


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
def rasterize(pdf: Path, page: int, dpi: int) -> Image.Image:
    """One page as RGB pixels by pdftoppm (annotations and images included, as printed)."""
    png = subprocess.run(["pdftoppm", "-f", str(page), "-l", str(page), "-r", str(dpi), "-png", str(pdf)],
                         capture_output=True, check=True, timeout=120).stdout
    return Image.open(io.BytesIO(png)).convert("RGB")


def bilevel_scan(img: Image.Image, seed: int) -> Image.Image:
    """A 200 dpi bilevel scanner's page: tilt up to 1.2 degrees, slight blur, noise, fixed threshold, dust.

    Red stamps and signatures go black, as on the 200 dpi CCITT scans of scans/ (ttg-464, qngai-*-ccitt).
    """
    rng = np.random.default_rng(seed)
    gray = img.convert("L").rotate(float(rng.uniform(-1.2, 1.2)), resample=Image.Resampling.BILINEAR, fillcolor=255)
    gray = gray.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.4, 0.7))))
    arr = np.asarray(gray, dtype=np.float32) + rng.normal(0.0, 12.0, size=(gray.height, gray.width))
    black = arr < float(rng.uniform(150, 175))
    black |= rng.random(black.shape) < 2e-4  # dust: one pixel in 5,000 black
    return Image.fromarray(np.where(black, 0, 255).astype(np.uint8)).convert("1")


def phone_photo(img: Image.Image, seed: int) -> Image.Image:
    """A phone photo of the printed page: the sheet on a desk, seen a little askew (perspective), lit from
    one side, slightly out of focus, noisy, JPEG-compressed. No dpi: phones do not write one."""
    rng = np.random.default_rng(seed)
    page = np.asarray(img, dtype=np.float32)
    h, w = page.shape[:2]
    out_w, out_h = int(w * 1.12), int(h * 1.10)
    jitter = lambda: rng.uniform(0.0, 0.045)  # noqa: E731  a corner moves up to 4.5% of the page inwards
    corners = np.float32([
        [out_w * (0.05 + jitter()), out_h * (0.04 + jitter())],
        [out_w * (0.95 - jitter()), out_h * (0.04 + jitter())],
        [out_w * (0.95 - jitter()), out_h * (0.96 - jitter())],
        [out_w * (0.05 + jitter()), out_h * (0.96 - jitter())],
    ])
    matrix = cv2.getPerspectiveTransform(np.float32([[0, 0], [w, 0], [w, h], [0, h]]), corners)
    desk = np.array(rng.uniform(60, 120, size=3), dtype=np.float32)
    warped = cv2.warpPerspective(page, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=[float(c) for c in desk])
    yy, xx = np.mgrid[0:out_h, 0:out_w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / out_w + np.sin(angle) * yy / out_h)
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) or 1.0)
    light = 0.62 + 0.33 * ramp  # one side of the sheet about half as bright as the other
    vignette = 1.0 - 0.18 * (((xx / out_w - 0.5) ** 2 + (yy / out_h - 0.5) ** 2) / 0.5)
    warped = warped * (light * vignette)[..., None] * np.float32([1.0, 0.97, 0.90])  # warm indoor light
    warped = cv2.GaussianBlur(warped, (0, 0), float(rng.uniform(0.8, 1.3)))
    warped += rng.normal(0.0, 5.0, size=warped.shape).astype(np.float32)
    return Image.fromarray(np.clip(warped, 0, 255).astype(np.uint8), mode="RGB")


def _cached(path: Path, make) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        make(tmp)
        tmp.replace(path)
    return path


def _variants(pdf: Path, page: int, cache: Path) -> list[tuple[str, str, Path, Callable[[Path], None]]]:
    """(kind, name, cached image, how to make it) for each variant of one born-digital page."""
    stem = f"{pdf.stem}-p{page}"

    def clean(p: Path) -> None:
        rasterize(pdf, page, 300).save(p, "PNG", dpi=(300, 300))

    def degraded(p: Path) -> None:
        bilevel_scan(rasterize(pdf, page, 200), _seed(stem, "bilevel")).save(p, "TIFF", compression="group4", dpi=(200, 200))

    def photo(p: Path) -> None:
        phone_photo(rasterize(pdf, page, 220), _seed(stem, "photo")).save(p, "JPEG", quality=82)

    out = [("official-letter-300dpi", f"{stem}-300dpi", cache / f"{stem}-300dpi.png", clean),
           ("official-letter-200dpi-degraded", f"{stem}-200dpi-degraded", cache / f"{stem}-200dpi-degraded.tif", degraded)]
    if (pdf.name, page) in PHOTOGRAPHED:
        out.append(("photo", f"{stem}-photo", cache / f"{stem}-photo.jpg", photo))
    return out


# ---------------------------------------------------------------------------------------------
# The set
# ---------------------------------------------------------------------------------------------
def transcribed_pages(corpus: Path, wanted: Callable[[str], bool]) -> list[RealPage]:
    return [RealPage(jpg.stem, "notice-scan", source_of(jpg.stem), jpg, jpg.with_suffix(".txt").read_text("utf-8"))
            for jpg in sorted((corpus / "transcribed").glob("*.jpg")) if wanted(jpg.stem)]


def born_digital_pages(corpus: Path, cache: Path, wanted: Callable[[str], bool]) -> list[RealPage]:
    pages = []
    for file, numbers in BORN_DIGITAL.items():
        pdf = corpus / "born-digital" / file
        for n in numbers:
            variants = [v for v in _variants(pdf, n, cache) if wanted(v[1])]
            truth = page_truth(pdf, n) if variants else ""
            for kind, name, path, make in variants:
                pages.append(RealPage(name, kind, source_of(file), _cached(path, make), truth))
    return pages


def build(cache: Path | None = None, corpus: Path = CORPUS, names: Iterable[str] | None = None) -> list[RealPage]:
    """The pages of the set (only ``names`` when given), rendered into ``cache`` (default: a new temporary
    folder) where not there yet: about 70 s for all 35 pages on 2 cores, nothing when cached.

    Raises MissingCorpus when ``corpus`` is absent.
    """
    if not (corpus / "README.md").is_file():
        raise MissingCorpus(f"{corpus} is absent (../shared/corpus/real-vi is kept outside the repository)")
    cache = Path(cache) if cache is not None else Path(tempfile.mkdtemp(prefix="sohoa-real-set-"))
    chosen = None if names is None else set(names)
    wanted = (lambda name: True) if chosen is None else chosen.__contains__
    pages = transcribed_pages(corpus, wanted) + born_digital_pages(corpus, cache, wanted)
    if chosen is not None and len(pages) != len(chosen):
        raise KeyError(f"not in the real set: {sorted(chosen - {p.name for p in pages})}")
    return pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="folder for the rendered pages (default: a temp dir)")
    parser.add_argument("--print-truth", metavar="NAME", help="print the truth of this page")
    args = parser.parse_args()
    try:
        pages = build(args.cache)
    except MissingCorpus as e:
        sys.exit(f"real set: {e}")
    for p in pages:
        if args.print_truth in (None, p.name):
            print(f"{p.kind:32s} {p.name:40s} {len(p.truth):5d} chars  {p.source}  {p.path}")
        if args.print_truth == p.name:
            print(p.truth)
    sources = {p.source for p in pages}
    print(f"# {len(pages)} pages from {len(sources)} sources", file=sys.stderr)


if __name__ == "__main__":
    main()
