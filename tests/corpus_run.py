"""Run a folder of odd files (the peer corpus) through capture and OCR (the runner), one outcome per file.

Used by tests/test_corpus.py, and to refresh the table in docs/corpus.md:

    .venv/bin/python -m tests.corpus_run ../shared/corpus/ocrmypdf > docs/corpus.md
"""

from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel

from sohoa.kernel.errors import InputRefused, OcrError
from sohoa.kernel.settings import Settings
from sohoa.services import runner
from sohoa.storage import open_store

PAGE_TIMEOUT_S = 120.0


class CorpusRow(BaseModel):
    name: str
    outcome: str  # processed | refused | failed
    code: str | None = None
    message: str | None = None
    pages: int = 0
    words: int = 0
    confidence: float = 0.0
    origins: str = ""
    seconds: float = 0.0
    text: str = ""


def run_file(path: Path, settings: Settings) -> CorpusRow:
    started = time.perf_counter()
    try:
        read = runner.read(path, settings)  # the pipeline's own runner: capture and OCR as a run does them
        captured, result = read.done["capture"], read.done["ocr"]
    except (InputRefused, OcrError) as error:
        outcome = "refused" if isinstance(error, InputRefused) else "failed"
        message = error.message if isinstance(error, InputRefused) else str(error)
        return CorpusRow(name=path.name, outcome=outcome, code=error.code, message=message[:120],
                         seconds=round(time.perf_counter() - started, 2))
    words = sum(p.word_count for p in result.pages)
    read = [p for p in result.pages if p.word_count]
    origins = ", ".join(sorted({f"{p.origin} {p.dpi} dpi" for p in captured.pages}))
    return CorpusRow(
        name=path.name, outcome="processed", pages=len(result.pages), words=words,
        confidence=round(sum(p.confidence for p in read) / len(read), 1) if read else 0.0, origins=origins,
        seconds=round(time.perf_counter() - started, 2), text=" ".join(" ".join(p.text.split()) for p in result.pages),
    )


CORPUS_LANGUAGES = "vie+eng"


def run_corpus(folder: Path, workdir: Path) -> list[CorpusRow]:
    # The peer corpus is English, French, Dutch and Basque, not Vietnamese: read it as a province would set
    # up for foreign-language documents (the default `vie` alone misreads several of its known words).
    settings = Settings(archive=str(workdir / "archive"), work=str(workdir / "work"), page_timeout_s=PAGE_TIMEOUT_S,
                        languages=CORPUS_LANGUAGES)
    open_store(settings.work).ensure_ready()
    files = [path for path in sorted(folder.iterdir()) if path.is_file()]
    with ThreadPoolExecutor(max_workers=settings.jobs + 1) as pool:  # most files are one page: keep every engine busy
        return list(pool.map(lambda path: run_file(path, settings), files))


def markdown(rows: list[CorpusRow]) -> str:
    lines = ["| file | outcome | pages | words | mean conf. | pages taken as | s | first words / reason |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        detail = (r.text[:60] or "(no text)") if r.outcome == "processed" else f"`{r.code}`: {r.message}"
        detail = detail.replace("|", "\\|")
        lines.append(f"| {r.name} | {r.outcome} | {r.pages or ''} | {r.words if r.outcome == 'processed' else ''} | "
                     f"{r.confidence or ''} | {r.origins} | {r.seconds} | {detail} |")
    return "\n".join(lines)


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared/corpus/ocrmypdf"
    with tempfile.TemporaryDirectory(prefix="sohoa-corpus-") as tmp:
        rows = run_corpus(folder, Path(tmp))
    print(markdown(rows))
