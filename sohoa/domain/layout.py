"""The archive's layout: where a dossier lives in the archive store. The one module that knows it.

    dossiers/<agency>/<procedure>/<year>/<dossier id>/{manifest.json, original.*, <id>.pdf, documents/, ...}

- agency: the agency part of the dossier code (``000.00.00.H49``), else the configured agency;
- procedure: the procedure code when the dossier was first archived, else ``unknown``;
- year: the dossier code's date (``YYMMDD``), else the year it was dropped, else the year archived.

Every component is validated before it becomes part of a key (codes are read from scans, so they
are attacker-controlled text). A dossier stays where it was first archived, even when an operator
later sets another procedure: ``index/dossiers/<id>.json`` points at its prefix. The pointer is
claimed create-only *before* any file is written, so two runs of the same input agree on one
prefix, and a retry of a crashed archive finds and completes the same one. The manifest is still
the commit marker: a prefix without ``manifest.json`` is an incomplete archive, never shown as one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel

from sohoa.storage import ObjectExists, ObjectNotFound, Store

DOSSIERS = "dossiers/"
MANIFEST = "manifest.json"
UNKNOWN = "unknown"
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}\Z", re.ASCII)  # \Z: "$" lets a final newline in
_CODE = re.compile(r"^(\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2})-(\d{2})\d{4}-\d{4}\Z", re.ASCII)


class LayoutError(ValueError):
    """A component that cannot be part of an archive key (a path, control characters, too long)."""


def segment(value: str, what: str) -> str:
    """``value`` if it is one safe key segment (no ``/``, no ``..``, printable ASCII), else LayoutError."""
    if not _SEGMENT.match(value) or ".." in value:
        raise LayoutError(f"{what} {value!r} cannot be part of an archive key")
    return value


def agency_of(dossier_id: str | None) -> str:
    """``000.00.00.H49-260325-6668`` -> ``000.00.00.H49``; ids that are not dossier codes: unknown."""
    match = _CODE.match(dossier_id or "")
    return match.group(1) if match else UNKNOWN


@dataclass(frozen=True)
class Place:
    """Where a new dossier goes, before its pointer decides (an existing dossier keeps its place)."""

    agency: str
    procedure: str
    year: str

    @classmethod
    def of(cls, dossier_id: str, procedure: str | None, when: str, default_agency: str) -> Place:
        """``when``: the ISO time the dossier was dropped (or is being archived)."""
        match = _CODE.match(dossier_id)
        agency = match.group(1) if match else default_agency
        year = f"20{match.group(2)}" if match else when[:4]
        chosen = procedure if procedure and _SEGMENT.match(procedure) and ".." not in procedure else UNKNOWN
        return cls(segment(agency, "agency"), chosen, segment(year, "year"))

    @classmethod
    def from_prefix(cls, prefix: str) -> Place:
        """The place of an archived dossier, from its prefix (``dossiers/<agency>/<procedure>/<year>/<id>/``)."""
        parts = prefix.strip("/").split("/")
        if len(parts) != 5 or parts[0] != DOSSIERS.rstrip("/"):
            raise LayoutError(f"{prefix!r} is not a dossier prefix of this layout")
        return cls(*parts[1:4])

    def prefix(self, ident: str) -> str:
        return f"{DOSSIERS}{self.agency}/{self.procedure}/{self.year}/{segment(ident, 'dossier id')}/"


class Pointer(BaseModel):
    """``index/dossiers/<id>.json``: which prefix holds dossier ``id``, and for which input."""

    prefix: str
    sha256: str


def pointer_key(ident: str) -> str:
    return f"index/dossiers/{segment(ident, 'dossier id')}.json"


def locate(store: Store, ident: str) -> str | None:
    """The prefix of archived dossier ``ident`` (complete or not), or None; LayoutError for a non-id."""
    key = pointer_key(ident)
    try:
        return Pointer.model_validate_json(store.get_bytes(key)).prefix
    except (ObjectNotFound, ValueError):
        return None


def claim(store: Store, ident: str, source_sha256: str, place: Place) -> tuple[str, str]:
    """(archive id, prefix) for this input: the dossier's own place, or, when another input already
    holds that dossier id, a sibling ``<id>~<sha256[:12]>``. Claimed create-only, so concurrent runs agree."""
    for candidate in (ident, f"{ident}~{source_sha256[:12]}"):
        key = pointer_key(candidate)
        wanted = Pointer(prefix=place.prefix(candidate), sha256=source_sha256)
        try:
            store.put_bytes(key, wanted.model_dump_json().encode(), content_type="application/json", create_only=True)
            return candidate, wanted.prefix
        except ObjectExists:
            held = Pointer.model_validate_json(store.get_bytes(key))
            if held.sha256 == source_sha256:
                return candidate, held.prefix
    raise LayoutError(f"dossier id {ident} is held by other inputs at both of its places")


def manifest_keys(store: Store) -> list[str]:
    """Keys of the current manifest of every complete archive (one listing)."""
    return [info.key for info in store.list(DOSSIERS) if info.key.endswith("/" + MANIFEST)]


def split_manifest_key(key: str) -> tuple[str, str]:
    """``dossiers/a/p/y/<id>/manifest.json`` -> (prefix, archive id)."""
    prefix = key[: -len(MANIFEST)]
    return prefix, prefix.rstrip("/").rsplit("/", 1)[-1]


def dossier_prefixes(store: Store) -> dict[str, list[str]]:
    """Every key under each dossier prefix, by prefix (one listing). A dossier prefix is the folder of
    a manifest or the prefix a pointer names; keys under neither are reported by their 4th folder."""
    keys = [info.key for info in store.list(DOSSIERS)]
    known = {split_manifest_key(k)[0] for k in keys if k.endswith("/" + MANIFEST)}
    known |= {p for info in store.list("index/dossiers/") if (p := _pointed(store, info.key))}
    found: dict[str, list[str]] = {prefix: [] for prefix in known}
    for key in keys:
        owner = next((p for p in _parents(key) if p in known), None) or _guess_prefix(key)
        found.setdefault(owner, []).append(key)
    return found


def _pointed(store: Store, key: str) -> str | None:
    try:
        return Pointer.model_validate_json(store.get_bytes(key)).prefix
    except (ObjectNotFound, ValueError):
        return None


def _parents(key: str) -> list[str]:
    parts = key.split("/")
    return ["/".join(parts[:i]) + "/" for i in range(len(parts) - 1, 0, -1)]


def _guess_prefix(key: str) -> str:
    """The layout's dossier folder of a stray key: dossiers/<agency>/<procedure>/<year>/<id>/."""
    parts = key.split("/")
    return "/".join(parts[:5]) + "/" if len(parts) > 5 else key.rsplit("/", 1)[0] + "/"
