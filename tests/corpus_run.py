"""Run a folder of odd files (the peer corpus) through ``sohoa run`` in one batch, one outcome per file.

Used by tests/test_corpus.py, and to refresh the table in docs/corpus.md:

    .venv/bin/python -m tests.corpus_run ../shared/corpus/ocrmypdf > docs/corpus.md
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

SOHOA = str(Path(sys.executable).parent / "sohoa")
PAGE_TIMEOUT_S = 120
# The peer corpus is English, French, Dutch and Basque, not Vietnamese: read it as a province would set up
# for foreign-language documents (the default `vie` alone misreads several of its known words).
CORPUS_LANGUAGES = "vie+eng"


class Batch(BaseModel):
    outcomes: dict[str, dict]  # by file name: the --json line of each input
    texts: dict[str, str]  # by file name: the archived dossier's words (a duplicate: its first copy's)
    files: int
    exit: int
    stderr: str
    seconds: float


def run_batch(folder: Path, root: Path) -> Batch:
    """One ``sohoa run --json`` over every file of ``folder``, archive and work stores under ``root``."""
    env = {**os.environ, "SOHOA_ARCHIVE": str(root / "archive"), "SOHOA_WORK": str(root / "work"),
           "SOHOA_LANGUAGES": CORPUS_LANGUAGES, "SOHOA_PAGE_TIMEOUT_S": str(PAGE_TIMEOUT_S)}
    files = sorted(str(path) for path in folder.iterdir() if path.is_file())
    started = time.perf_counter()
    done = subprocess.run([SOHOA, "run", "--json", "-q", *files], env=env, capture_output=True, text=True,
                          timeout=PAGE_TIMEOUT_S * 10)
    outcomes = {Path(o["input"]).name: o for o in map(json.loads, done.stdout.splitlines())}
    texts = {name: _words(root / "archive", o["dossier_id"]) for name, o in outcomes.items() if o.get("dossier_id")}
    return Batch(outcomes=outcomes, texts=texts, files=len(files), exit=done.returncode, stderr=done.stderr,
                 seconds=round(time.perf_counter() - started, 1))


def _words(archive: Path, dossier_id: str) -> str:
    found = list(archive.glob(f"dossiers/*/*/*/{dossier_id}/words.json"))
    pages = json.loads(found[0].read_text()) if found else []
    return " ".join(w["text"] for page in pages for w in page["words"])


def markdown(batch: Batch) -> str:
    lines = ["| file | outcome | pages | documents | s | first words / reason |", "|---|---|---|---|---|---|"]
    for name, o in sorted(batch.outcomes.items()):
        reason = o.get("reason") or {}
        detail = (batch.texts.get(name, "")[:60] or "(no text)") if o.get("dossier_id") else \
            f"`{reason.get('code')}`: {reason.get('message', '')[:100]}"
        lines.append(f"| {name} | {o['status']} | {o.get('pages') or ''} | {', '.join(o.get('documents') or [])} | "
                     f"{o.get('duration_s', '')} | {detail.replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared/corpus/ocrmypdf"
    with tempfile.TemporaryDirectory(prefix="sohoa-corpus-") as tmp:
        batch = run_batch(folder, Path(tmp))
    print(f"{batch.files} files, one `sohoa run` batch, exit {batch.exit}, {batch.seconds} s\n")
    print(markdown(batch))
