"""Choosing archived dossiers to process again, and getting their originals back from the archive.

Reprocessing starts from the archived original (byte for byte what was dropped), so it needs no
inbox and no scanning station. Steps whose keys did not change (same input, versions and
settings) are reused from the work store; ``from_step`` recomputes that step and the ones after
it; an archived dossier whose every step is unchanged is left alone unless forced.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar

from sohoa.domain import layout
from sohoa.domain.index import Unreadable
from sohoa.kernel.errors import ExitCode, ReasonCode, SohoaError, UsageError
from sohoa.kernel.keys import sha256_file
from sohoa.kernel.models import FileRef, Manifest
from sohoa.services.inbox import local_name
from sohoa.services.plan import STEPS
from sohoa.services.report import manifests
from sohoa.steps.capture import folder_sha256
from sohoa.storage import Store


class NothingSelected(UsageError):
    """The selection names no archived dossier (a mistyped id or an empty period)."""


class TamperedOriginal(SohoaError):
    """An archived original whose bytes no longer have the SHA-256 its manifest recorded: processing it again
    would archive another dossier under this one's id (measured: a new ``passed`` revision that had lost its
    dossier code and a document). Nothing is written; ``sohoa check`` lists the dossier as tampered."""

    exit_code = ExitCode.integrity
    code: ClassVar[ReasonCode] = ReasonCode.tampered_original


def select(store: Store, dossier_ids: list[str] | None = None, prefix: str | None = None, since: str | None = None,
           until: str | None = None, skipped: list[Unreadable] | None = None) -> list[Manifest]:
    """Archived dossiers by id, by id prefix (an agency's code) and/or by archiving date (ISO, inclusive).

    Manifests that cannot be read are left out and appended to ``skipped``; a dossier named by id whose
    manifest cannot be read is said so in the NothingSelected message."""
    if not (dossier_ids or prefix or since or until):
        raise NothingSelected("name dossiers: ids, an id prefix, or a date range (since/until)")
    unreadable: list[Unreadable] = []
    chosen = []
    for manifest in manifests(store, unreadable):
        day = manifest.created_at[:10]
        if dossier_ids and manifest.dossier_id not in dossier_ids:
            continue
        if (prefix and not manifest.dossier_id.startswith(prefix)) or (since and day < since) or (until and day > until):
            continue
        chosen.append(manifest)
    if skipped is not None:
        skipped.extend(unreadable)
    missing = sorted(set(dossier_ids or []) - {m.dossier_id for m in chosen})
    broken = {layout.split_manifest_key(u.key)[1]: u for u in unreadable}
    if any(m in broken for m in missing):
        raise NothingSelected("; ".join(f"the manifest of {m} cannot be read ({broken[m].key}: {broken[m].reason})"
                                        if m in broken else f"no archived dossier {m}" for m in missing))
    if missing or not chosen:
        raise NothingSelected(f"no archived dossier {', '.join(missing)}" if missing else "no archived dossier matches")
    return sorted(chosen, key=lambda m: m.dossier_id)


def refresh_for(from_step: str | None, force: bool) -> list[str] | None:
    """The steps to recompute: every one when forced, ``from_step`` (and those after it), or none (only
    what changed reruns: a new classifier, new settings)."""
    return [STEPS[0]] if force else [from_step] if from_step else None


def procedure_for(manifest: Manifest) -> str | None:
    """The procedure to give the new run: the caller's is given again; one read from the receipt or
    inferred is read again (a better reading may find another)."""
    return manifest.procedure if manifest.fields.procedure_source == "caller" else None


def original(store: Store, manifest: Manifest, folder: Path) -> Path:
    """Download the dossier's original (a file, or the files of a folder dossier) into ``folder``, verified:
    TamperedOriginal (the download removed) unless every file has the SHA-256 the manifest recorded for it and
    together they have the source's."""
    refs = sorted((name, ref) for name, ref in manifest.files.items() if name == "original" or name.startswith("original_"))
    if not refs:
        raise NothingSelected(f"{manifest.dossier_id} has no archived original")
    folder.mkdir(parents=True, exist_ok=True)
    if refs[0][0] == "original":
        path = folder / local_name(manifest.source.name)
        store.get_file(refs[0][1].key, path)
        _verify(manifest, [(refs[0][1], path)], path)
        return path
    target = folder / manifest.dossier_id
    target.mkdir(parents=True, exist_ok=True)
    files = []
    for name, ref in refs:
        index = int(name.split("_")[1])
        named = manifest.source.files[index - 1] if len(manifest.source.files) >= index else ref.key
        files.append((ref, target / local_name(named)))  # the names as received: the folder's order
        store.get_file(ref.key, files[-1][1])
    _verify(manifest, files, target)
    return target


def _verify(manifest: Manifest, files: list[tuple[FileRef, Path]], got: Path) -> None:
    """TamperedOriginal, after removing ``got``, when a file or the whole (a folder: capture's identity of it)
    differs from what was archived. A file is hashed once; a folder's files twice (page images, small)."""
    hashes = [sha256_file(path) for _, path in files]
    wrong = [ref.key for (ref, _), digest in zip(files, hashes) if digest != ref.sha256]
    whole = folder_sha256([path for _, path in files]) if got.is_dir() and not wrong else hashes[0]
    if not wrong and whole == manifest.source.sha256:
        return
    shutil.rmtree(got) if got.is_dir() else got.unlink(missing_ok=True)
    what = wrong[0] if wrong else "its original"
    raise TamperedOriginal(f"tampered_original: {manifest.dossier_id}: {what} does not have the SHA-256 its manifest"
                           f" recorded; not processed again (run sohoa check)")
