"""The archive's sanity checker: every archived file against the checksums its manifest lists.

A dossier's prefix holds the files its manifest lists, the manifests of earlier revisions
(``history/``) with the files they list, and the decision log (``decisions/``). Anything else
under the prefix is an orphan; a prefix with files but no ``manifest.json`` is an incomplete
archive (its writing stopped before the commit marker); a listed file that is gone is missing
(``missing_original`` when it is the input itself); a file whose bytes no longer hash to the
listed SHA-256 is tampered (or rotted). Read-only: it reports, an operator decides.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from sohoa.domain import layout
from sohoa.domain.revisions import DECISIONS, HISTORY, MANIFEST
from sohoa.kernel.models import Manifest
from sohoa.storage import ObjectNotFound, Store

Kind = Literal["tampered", "missing", "missing_original", "orphan", "incomplete", "unreadable_manifest"]
_OWN = (HISTORY, DECISIONS)


class Problem(BaseModel):
    kind: Kind
    dossier_id: str
    key: str
    detail: str


class CheckReport(BaseModel):
    store: str
    dossiers: int = 0
    files_checked: int = 0
    bytes_checked: int = 0
    problems: list[Problem] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _sha256(store: Store, key: str) -> str:
    """Streamed through a temporary file: archived scans can be hundreds of megabytes."""
    with tempfile.TemporaryDirectory(prefix="sohoa-check-") as tmp:
        path = Path(tmp) / "object"
        store.get_file(key, path)
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


def _listed(store: Store, prefix: str, keys: list[str], report: CheckReport,
            ident: str) -> Iterator[tuple[str, str, int, bool, bool]]:
    """(key, sha256, size, is_original, listed by the current manifest) of every file the manifest and
    its earlier revisions list."""
    manifests = [prefix + MANIFEST] + sorted(k for k in keys if k.startswith(prefix + HISTORY) and k.endswith(".json"))
    current = True
    for key in manifests:
        try:
            manifest = Manifest.model_validate_json(store.get_bytes(key))
        except (ObjectNotFound, ValueError) as exc:
            report.problems.append(Problem(kind="unreadable_manifest", dossier_id=ident, key=key,
                                           detail=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"))
            continue
        for name, ref in manifest.files.items():
            yield ref.key, ref.sha256, ref.size, name == "original" or name.startswith("original_"), current
        current = False


def check(store: Store, progress: Callable[[str], None] | None = None, hashes: bool = True) -> CheckReport:
    """Check every archived dossier; ``hashes=False`` compares sizes only (a quick pass)."""
    report = CheckReport(store=store.url)
    for prefix, keys in sorted(layout.dossier_prefixes(store).items()):
        ident = prefix.rstrip("/").rsplit("/", 1)[-1]
        report.dossiers += 1
        if prefix + MANIFEST not in keys:
            report.problems.append(Problem(kind="incomplete", dossier_id=ident, key=prefix,
                                           detail=f"{len(keys)} object(s) but no {MANIFEST}: archiving did not finish"))
            continue
        present = set(keys)
        problem = _manifest_problem(store, prefix + MANIFEST)
        if problem:
            report.problems.append(Problem(kind="tampered", dossier_id=ident, key=prefix + MANIFEST, detail=problem))
        known = {prefix + MANIFEST} | {k for k in keys if k[len(prefix):].startswith(_OWN)}
        seen: set[str] = set()
        for key, digest, size, is_original, current in _listed(store, prefix, keys, report, ident):
            known.add(key)
            if key in seen:
                continue
            seen.add(key)
            if key not in present:
                if current:
                    report.problems.append(Problem(kind="missing_original" if is_original else "missing", dossier_id=ident,
                                                   key=key, detail="listed in the manifest, not in the store"))
                continue
            report.files_checked += 1
            report.bytes_checked += size
            problem = _compare(store, key, digest, size, hashes)
            if problem:
                report.problems.append(Problem(kind="tampered", dossier_id=ident, key=key, detail=problem))
        for key in sorted(present - known):
            report.problems.append(Problem(kind="orphan", dossier_id=ident, key=key,
                                           detail="in the dossier's folder but listed by no manifest"))
        if progress:
            progress(ident)
    return report


def _manifest_problem(store: Store, key: str) -> str | None:
    """The manifest against the SHA-256 it was written with (its object metadata)."""
    recorded = store.stat(key).metadata.get("sha256")
    actual = hashlib.sha256(store.get_bytes(key)).hexdigest()
    if recorded and recorded != actual:
        return f"SHA-256 {actual[:16]}…, written with {recorded[:16]}…"
    return None if recorded else "no SHA-256 recorded with the manifest"


def _compare(store: Store, key: str, digest: str, size: int, hashes: bool) -> str | None:
    info = store.stat(key)
    if info.size != size:
        return f"{info.size} bytes, the manifest says {size}"
    if hashes:
        actual = _sha256(store, key)
        if actual != digest:
            return f"SHA-256 {actual[:16]}…, the manifest says {digest[:16]}…"
    return None
