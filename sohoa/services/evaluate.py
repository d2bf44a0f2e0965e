"""``sohoa eval DIR``: score classification and splitting on a folder of labelled dossiers.

A labelled dossier is an input (a PDF, TIFF, image, or a folder of page images) with a truth
file beside it named ``<input>.truth.json`` (what ``sohoa-synth`` writes)::

    {"procedure": "1.001193",
     "pages": [{"n": 1, "doc_type": "phieu_tiep_nhan", "starts_document": true},
               {"n": 2, "doc_type": "blank", "starts_document": false}, ...]}

``n`` counts the input's pages from 1; ``doc_type`` is a taxonomy code, or ``blank`` for a
page with nothing on it (a type missing from the taxonomy counts as ``khac``);
``starts_document`` is true on the first page of each document. ``procedure`` is optional.

Capture and OCR run through the pipeline's own runner (sohoa/services/runner.py, without Prefect) and
their results are the pipeline's (``results/<step key>`` in the work store, whoever computed them), so
a second evaluation (after ``sohoa train``) only classifies.
Reported: page-type accuracy over non-blank pages, blank detection, document-boundary
precision, recall and F1 (the first page of a dossier is not counted: it always starts one),
confusion pairs, calibration (accuracy per confidence bucket), the accuracy of predictions
with confidence >= 0.9, and procedure detection.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel, Field

from sohoa.domain.catalog import taxonomy
from sohoa.domain.model import ClassifierModel, ModelRef
from sohoa.domain.model import load as load_model
from sohoa.kernel.errors import UsageError
from sohoa.kernel.models import CaptureResult, ClassifyResult
from sohoa.kernel.settings import Settings
from sohoa.services import runner
from sohoa.services.plan import classifier_model
from sohoa.services.results import WorkStoreCache
from sohoa.steps import classify as classifying
from sohoa.steps import ocr as engine
from sohoa.storage import Store

BUCKETS = (0.0, 0.5, 0.7, 0.9, 0.95, 1.0001)
HIGH = 0.9


class TruthPage(BaseModel):
    n: int
    doc_type: str
    starts_document: bool


class Truth(BaseModel):
    procedure: str | None = None
    pages: list[TruthPage]


class Bucket(BaseModel):
    low: float
    high: float
    pages: int
    accuracy: float | None


class Confusion(BaseModel):
    truth: str
    predicted: str
    pages: int


class DossierResult(BaseModel):
    input: str
    pages: int
    wrong_pages: list[int] = Field(default_factory=list)
    missed_boundaries: list[int] = Field(default_factory=list)
    extra_boundaries: list[int] = Field(default_factory=list)
    procedure: str | None = None
    procedure_source: str = "none"
    procedure_expected: str | None = None


class EvalReport(BaseModel):
    dossiers: int
    pages: int = Field(description="Non-blank pages scored for their type")
    classifier: str
    page_accuracy: float
    boundary_precision: float
    boundary_recall: float
    boundary_f1: float
    high_confidence_accuracy: float | None = Field(description=f"Accuracy of pages typed with confidence >= {HIGH}")
    high_confidence_share: float = Field(description=f"Share of pages typed with confidence >= {HIGH}")
    blank_found: int
    blank_missed: int
    blank_false: int
    procedure_accuracy: float | None
    confusion: list[Confusion]
    calibration: list[Bucket]
    results: list[DossierResult]

    def metric(self, name: str) -> float | None:
        return getattr(self, name, None)


def find_labelled(folder: Path) -> list[tuple[Path, Truth]]:
    """Inputs of ``folder`` that have a truth file, in name order."""
    found = []
    for truth_file in sorted(folder.glob("*.truth.json")):
        source = folder / truth_file.name.removesuffix(".truth.json")
        if source.exists():
            found.append((source, Truth.model_validate_json(truth_file.read_text(encoding="utf-8"))))
    return found


def classify_one(source: Path, settings: Settings, work: Store, model: ClassifierModel | None,
                 ref: ModelRef | None) -> tuple[CaptureResult, ClassifyResult]:
    """Capture and OCR through the runner (their results are the pipeline's own, reused by key), then
    classify with the chosen model."""
    read = runner.read(source, settings, WorkStoreCache(work), ref)
    captured, ocr = read.done["capture"], read.done["ocr"]
    classified = classifying.classify(ocr, captured, settings, read.keys["classify"].key, None, store=work, model=model,
                                      model_ref=ref)
    return captured, classified


def evaluate(folder: Path, settings: Settings, archive: Store, work: Store, progress: Callable[[str], None] = lambda _: None
             ) -> EvalReport:
    labelled = find_labelled(folder)
    if not labelled:
        raise UsageError(f"no labelled dossiers in {folder} (inputs with a <input>.truth.json beside them)")
    ref = classifier_model(archive, settings)
    model = load_model(archive, ref) if ref else None
    engine.warm_up(settings)

    def one(item: tuple[Path, Truth]) -> tuple[Path, Truth, ClassifyResult]:
        source, truth = item
        _, classified = classify_one(source, settings, work, model, ref)
        progress(f"{source.name}: {len(classified.documents)} documents, {classified.procedure or 'no procedure'}")
        return source, truth, classified

    with ThreadPoolExecutor(max_workers=settings.jobs + 1) as pool:  # pages of several dossiers share the engines
        done = list(pool.map(one, labelled))
    return score(done, ref.key if ref else "rules", taxonomy(settings.taxonomy).codes())


def score(done: list[tuple[Path, Truth, ClassifyResult]], classifier: str, codes: set[str]) -> EvalReport:
    right = total = 0
    confusion: Counter[tuple[str, str]] = Counter()
    buckets: list[list[int]] = [[0, 0] for _ in BUCKETS[:-1]]
    tp = fp = fn = 0
    blank = Counter()
    procedures: list[bool] = []
    results = []
    for source, truth, classified in done:
        predicted = {p.n: p for p in classified.pages}
        result = DossierResult(input=source.name, pages=len(truth.pages), procedure=classified.procedure,
                               procedure_source=classified.procedure_source, procedure_expected=truth.procedure)
        content = [p for p in truth.pages if p.doc_type != classifying.BLANK]
        for page in truth.pages:
            guess = predicted.get(page.n)
            said_blank = guess is not None and guess.type == classifying.BLANK
            if page.doc_type == classifying.BLANK:
                blank["found" if said_blank else "missed"] += 1
                continue
            if said_blank:
                blank["false"] += 1
            want = page.doc_type if page.doc_type in codes else classifying.UNKNOWN
            got = guess.type if guess else "(none)"
            total += 1
            ok = got == want
            right += ok
            if not ok:
                confusion[(want, got)] += 1
                result.wrong_pages.append(page.n)
            if guess is not None:
                index = next(i for i in range(len(BUCKETS) - 1) if BUCKETS[i] <= guess.confidence < BUCKETS[i + 1])
                buckets[index][0] += 1
                buckets[index][1] += ok
        first = content[0].n if content else None
        want_starts = {p.n for p in content if p.starts_document and p.n != first}
        got_starts = {p.n for p in classified.pages if p.starts and p.type != classifying.BLANK and p.n != first}
        tp += len(want_starts & got_starts)
        fp += len(got_starts - want_starts)
        fn += len(want_starts - got_starts)
        result.missed_boundaries = sorted(want_starts - got_starts)
        result.extra_boundaries = sorted(got_starts - want_starts)
        if truth.procedure:
            procedures.append(classified.procedure == truth.procedure)
        results.append(result)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    high = [b for (low, _), b in zip(zip(BUCKETS, BUCKETS[1:]), buckets) if low >= HIGH]
    high_pages, high_right = sum(b[0] for b in high), sum(b[1] for b in high)
    return EvalReport(
        dossiers=len(done), pages=total, classifier=classifier,
        page_accuracy=round(right / total, 4) if total else 0.0,
        boundary_precision=round(precision, 4), boundary_recall=round(recall, 4),
        boundary_f1=round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
        high_confidence_accuracy=round(high_right / high_pages, 4) if high_pages else None,
        high_confidence_share=round(high_pages / total, 4) if total else 0.0,
        blank_found=blank["found"], blank_missed=blank["missed"], blank_false=blank["false"],
        procedure_accuracy=round(sum(procedures) / len(procedures), 4) if procedures else None,
        confusion=[Confusion(truth=t, predicted=p, pages=n) for (t, p), n in confusion.most_common()],
        calibration=[Bucket(low=low, high=min(high_, 1.0), pages=n, accuracy=round(r / n, 4) if n else None)
                     for (low, high_), (n, r) in zip(zip(BUCKETS, BUCKETS[1:]), buckets)],
        results=results,
    )


def render(report: EvalReport) -> str:
    """The report as text for a terminal."""
    lines = [
        f"{report.dossiers} dossiers, {report.pages} pages typed, classifier: {report.classifier}",
        f"page-type accuracy      {report.page_accuracy:7.2%}",
        f"boundaries              precision {report.boundary_precision:6.2%}  recall {report.boundary_recall:6.2%}"
        f"  F1 {report.boundary_f1:6.3f}",
        f"confidence >= {HIGH}       {report.high_confidence_share:6.1%} of pages, "
        + (f"{report.high_confidence_accuracy:7.2%} correct" if report.high_confidence_accuracy is not None else "none"),
        f"blank pages             {report.blank_found} found, {report.blank_missed} missed, {report.blank_false} false",
    ]
    if report.procedure_accuracy is not None:
        lines.append(f"procedure               {report.procedure_accuracy:7.2%} correct")
    lines.append("calibration (confidence: pages, accuracy)")
    for bucket in report.calibration:
        accuracy = f"{bucket.accuracy:7.2%}" if bucket.accuracy is not None else "      -"
        lines.append(f"  [{bucket.low:.2f}, {bucket.high:.2f})  {bucket.pages:5d}  {accuracy}")
    if report.confusion:
        lines.append("confusions (truth -> predicted: pages)")
        lines += [f"  {c.truth} -> {c.predicted}: {c.pages}" for c in report.confusion]
    for result in report.results:
        if result.wrong_pages or result.missed_boundaries or result.extra_boundaries:
            lines.append(f"  {result.input}: wrong pages {result.wrong_pages}, missed boundaries {result.missed_boundaries}, "
                         f"extra boundaries {result.extra_boundaries}")
    return "\n".join(lines)


def check_requirements(report: EvalReport, requirements: dict[str, float]) -> list[str]:
    """Unmet requirements (``name >= value``), as messages."""
    failures = []
    for name, wanted in requirements.items():
        value = report.metric(name)
        if not isinstance(value, float | int) or value < wanted:
            failures.append(f"{name} = {value} is below {wanted}")
    return failures
