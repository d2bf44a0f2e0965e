"""Choosing archived dossiers to process again, and getting their originals back from the archive.

Reprocessing starts from the archived original (byte for byte what was dropped), so it needs no
inbox and no scanning station. Steps whose keys did not change (same input, versions and
settings) are reused from the work store; ``from_step`` recomputes that step and the ones after
it; an archived dossier whose every step is unchanged is left alone unless forced.
"""

from __future__ import annotations

from pathlib import Path

from sohoa.kernel.errors import UsageError
from sohoa.kernel.models import Manifest
from sohoa.services.inbox import local_name
from sohoa.services.plan import STEPS
from sohoa.services.report import manifests
from sohoa.storage import Store


class NothingSelected(UsageError):
    """The selection names no archived dossier (a mistyped id or an empty period)."""


def select(store: Store, dossier_ids: list[str] | None = None, prefix: str | None = None, since: str | None = None,
           until: str | None = None) -> list[Manifest]:
    """Archived dossiers by id, by id prefix (an agency's code) and/or by archiving date (ISO, inclusive)."""
    if not (dossier_ids or prefix or since or until):
        raise NothingSelected("name dossiers: ids, an id prefix, or a date range (since/until)")
    chosen = []
    for manifest in manifests(store):
        day = manifest.created_at[:10]
        if dossier_ids and manifest.dossier_id not in dossier_ids:
            continue
        if (prefix and not manifest.dossier_id.startswith(prefix)) or (since and day < since) or (until and day > until):
            continue
        chosen.append(manifest)
    missing = sorted(set(dossier_ids or []) - {m.dossier_id for m in chosen})
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
    """Download the dossier's original (a file, or the files of a folder dossier) into ``folder``."""
    refs = sorted((name, ref) for name, ref in manifest.files.items() if name == "original" or name.startswith("original_"))
    if not refs:
        raise NothingSelected(f"{manifest.dossier_id} has no archived original")
    folder.mkdir(parents=True, exist_ok=True)
    if refs[0][0] == "original":
        path = folder / local_name(manifest.source.name)
        store.get_file(refs[0][1].key, path)
        return path
    target = folder / manifest.dossier_id
    target.mkdir(parents=True, exist_ok=True)
    for name, ref in refs:
        index = int(name.split("_")[1])
        named = manifest.source.files[index - 1] if len(manifest.source.files) >= index else ref.key
        store.get_file(ref.key, target / local_name(named))  # the names as received: the folder's order
    return target
