"""Taxonomy and procedure catalog, kept as data (TOML) so they change without code.

The packaged files (sohoa/domain/data/) are the defaults; ``SOHOA_TAXONOMY`` and ``SOHOA_CATALOG``
name a province's own files instead. Both are hashed into the cache keys of the steps that use
them: editing a data file reruns classification or verification, never OCR.
"""

from __future__ import annotations

import os
import re
import tomllib
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from sohoa.domain.fields import FieldSpec
from sohoa.kernel.keys import sha256_bytes
from sohoa.kernel.settings import StepSettings


class DocType(BaseModel):
    code: str
    label: str
    patterns: list[str] = Field(default_factory=list)
    priority: int = 0
    fields: dict[str, FieldSpec] = Field(default_factory=dict, description="Labelled values printed on the document")

    def compiled(self) -> list[re.Pattern[str]]:
        return _compile(tuple(self.patterns))


class Taxonomy(BaseModel):
    types: list[DocType]
    header_patterns: list[str]
    digest: str

    def codes(self) -> set[str]:
        return {t.code for t in self.types}

    def get(self, code: str) -> DocType:
        """The type with this code; KeyError if the taxonomy has none."""
        for doc_type in self.types:
            if doc_type.code == code:
                return doc_type
        raise KeyError(code)


class Conditional(BaseModel):
    type: str
    when: Literal["proxy"] = Field(description="proxy: the person who handed the dossier in is not the applicant")


class Procedure(BaseModel):
    code: str
    name: str
    required: list[str]
    optional: list[str] = Field(default_factory=list)
    conditional: list[Conditional] = Field(default_factory=list, description="Required only in some cases")
    counts: dict[str, int] = Field(default_factory=dict, description="Copies usually handed in (two ID cards to marry)")
    maintenance: str = Field("Vĩnh viễn", description="Thời hạn bảo quản of its records (Decree 30/2020 Appendix VI)")
    rights: str = Field("Hạn chế", description="Chế độ sử dụng: the records hold personal data")

    def known(self) -> set[str]:
        return {*self.required, *self.optional, *(c.type for c in self.conditional)}


class Catalog(BaseModel):
    procedures: dict[str, Procedure]
    digest: str


@lru_cache(maxsize=256)
def _compile(patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    return [re.compile(p) for p in patterns]


def _read(name: str, override: str | None) -> bytes:
    """The file named by the setting, else the packaged default (sohoa/domain/data/NAME)."""
    if override:
        return Path(override).expanduser().read_bytes()
    return resources.files("sohoa.domain").joinpath("data", name).read_bytes()


def taxonomy(path: str | None = None) -> Taxonomy:
    """Document types: ``SOHOA_TAXONOMY`` (a TOML file) or the packaged taxonomy."""
    return _taxonomy(path if path is not None else os.environ.get("SOHOA_TAXONOMY") or None)


@lru_cache(maxsize=8)
def _taxonomy(path: str | None) -> Taxonomy:
    raw = _read("taxonomy.toml", path)
    data = tomllib.loads(raw.decode())
    return Taxonomy(
        types=[DocType(**t) for t in data["types"]],
        header_patterns=data.get("header", {}).get("patterns", []),
        digest=sha256_bytes(raw)[:16],
    )


def catalog(path: str | None = None) -> Catalog:
    """Procedures: ``SOHOA_CATALOG`` (a TOML file) or the packaged catalog."""
    return _catalog(path if path is not None else os.environ.get("SOHOA_CATALOG") or None)


@lru_cache(maxsize=8)
def _catalog(path: str | None) -> Catalog:
    raw = _read("catalog.toml", path)
    data = tomllib.loads(raw.decode())
    procedures = {p["code"]: Procedure(**p) for p in data["procedures"]}
    return Catalog(procedures=procedures, digest=sha256_bytes(raw)[:16])


def key_of(step_settings: StepSettings) -> dict:
    """A step's settings as its cache key takes them: every field, and each data file (taxonomy, catalog) as
    the digest of its content, so editing a file reruns the steps that read it and renaming one does not."""
    loaders = {"taxonomy": taxonomy, "catalog": catalog}
    values = step_settings.model_dump()
    return {**values, **{name: loaders[name](values[name]).digest for name in step_settings.data_files}}
