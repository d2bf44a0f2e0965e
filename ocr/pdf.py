"""Assemble the searchable PDF: each page image as scanned, under its invisible text layer.

JPEG pages are embedded as their own bytes (no re-encoding); other images are stored
losslessly (Flate). The text layer is the text-only PDF that tesseract wrote in the same
pass, laid over the page as a form XObject and scaled to the page size.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import pikepdf
from PIL import Image

from pipeline.models import PageImage

_COLORSPACES = {"L": "/DeviceGray", "1": "/DeviceGray", "RGB": "/DeviceRGB", "CMYK": "/DeviceCMYK"}


def _image_xobject(pdf: pikepdf.Pdf, path: Path, media_type: str) -> pikepdf.Stream:
    with Image.open(path) as image:
        image.load()
        if media_type == "image/jpeg" and image.mode in ("L", "RGB", "CMYK"):
            stream = pikepdf.Stream(pdf, path.read_bytes())
            stream.Filter = pikepdf.Name.DCTDecode
            mode = image.mode
            if mode == "CMYK":  # Adobe CMYK JPEGs are stored inverted
                stream.Decode = pikepdf.Array([1, 0] * 4)
        else:
            if image.mode not in _COLORSPACES:
                image = image.convert("RGB")
            mode = image.mode
            stream = pikepdf.Stream(pdf, zlib.compress(image.tobytes(), 6))
            stream.Filter = pikepdf.Name.FlateDecode
        stream.Type = pikepdf.Name.XObject
        stream.Subtype = pikepdf.Name.Image
        stream.Width, stream.Height = image.size
        stream.ColorSpace = pikepdf.Name(_COLORSPACES[mode])
        stream.BitsPerComponent = 1 if mode == "1" else 8
        return stream


def assemble(pages: Sequence[tuple[PageImage, Path, Path]], out: Path) -> None:
    """Write one PDF page per (page, image file, text-layer PDF) in order."""
    pdf = pikepdf.new()
    layers: list[pikepdf.Pdf] = []
    try:
        for page, image_path, layer_path in pages:
            width_pt, height_pt = page.width * 72 / page.dpi, page.height * 72 / page.dpi
            target = pdf.add_blank_page(page_size=(width_pt, height_pt))
            target.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=_image_xobject(pdf, image_path, page.media_type)))
            target.Contents = pdf.make_stream(f"q {width_pt:.4f} 0 0 {height_pt:.4f} 0 0 cm /Im0 Do Q".encode())
            layer = pikepdf.open(layer_path)
            layers.append(layer)
            target.add_overlay(layer.pages[0], pikepdf.Rectangle(0, 0, width_pt, height_pt))
        pdf.save(out, compress_streams=True, object_stream_mode=pikepdf.ObjectStreamMode.generate)
    finally:
        for layer in layers:
            layer.close()
        pdf.close()
