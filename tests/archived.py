"""Putting a manifest where the archive step would (sohoa/domain/layout.py), for tests that build manifests by hand."""

from __future__ import annotations

from pathlib import Path

from sohoa.domain import layout
from sohoa.kernel.models import Manifest
from sohoa.steps import archive as archiving
from sohoa.storage import LocalStore, Store


def put_archived(store: Store, manifest: Manifest, agency: str = "unknown") -> str:
    """Claim the dossier's place and write its manifest (with its SHA-256); returns the prefix."""
    place = layout.Place.of(manifest.dossier_id, manifest.procedure, manifest.created_at, agency)
    _, prefix = layout.claim(store, manifest.dossier_id, manifest.source.sha256, place)
    archiving.write_manifest(store, prefix, manifest)
    return prefix


def expected_prefix(code: str, procedure: str) -> str:
    """The layout of a dossier with a dossier code: dossiers/<agency>/<procedure>/<20YY>/<code>/."""
    return f"dossiers/{code.split('-')[0]}/{procedure}/20{code.split('-')[1][:2]}/{code}/"


def dossier_dir(archive: Path, ident: str) -> Path:
    """The folder of archived dossier ``ident`` in a local archive, wherever the layout put it."""
    prefix = layout.locate(LocalStore(archive), ident)
    if prefix is None:
        raise FileNotFoundError(f"no archived dossier {ident} in {archive}")
    return archive / prefix


def manifest_path(archive: Path, ident: str) -> Path:
    """Where the manifest of ``ident`` is (or will be, once its place is claimed) in a local archive."""
    prefix = layout.locate(LocalStore(archive), ident)
    return archive / (prefix or f"index/dossiers/{ident}.missing/") / "manifest.json"
