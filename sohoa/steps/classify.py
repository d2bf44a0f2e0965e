"""Classification: split the dossier into documents and type each page, with calibrated confidence.

Two readers of each page are combined: the rules (sohoa/domain/rules.py: the title, the national
motto header, page numbers) and, when one has been trained from operators' decisions, the model
(sohoa/domain/model.py: character n-grams of the whole page). Rules decide where they are sure
(an exact title), the model types what the rules cannot read (a garbled or missing title, a
form's later pages), and where they disagree the confidence drops so that the page goes to
review rather than being trusted.

A page opens a new document when it shows a title, the motto header or "page 1", when it
follows a blank separator page, or when the model is confident it is of another type than the
document before it; a page numbered 2 or later, or marked "(tiếp theo)", continues the
document before it whatever else it shows. Blank pages belong to no document. A receipt names
the documents it received, so its pattern wins a title zone (rules).
"""

from __future__ import annotations

from dataclasses import dataclass

from sohoa.domain import fields as labelled
from sohoa.domain import identifiers, identity, rules
from sohoa.domain.catalog import Catalog, Taxonomy, catalog, key_of, taxonomy
from sohoa.domain.model import ClassifierModel, ModelRef
from sohoa.kernel.keys import step_key
from sohoa.kernel.models import CaptureResult, ClassifyResult, Document, DossierFields, OcrResult, PagePrediction
from sohoa.kernel.settings import ClassifySettings, Settings
from sohoa.ocr import imaging
from sohoa.storage import Store

VERSION = "5"  # 2: dossier code from the receipt QR code; 3: rules + trained model, page marks, blank separators;
# 4: labelled fields per document type; 5: typed dossier fields (DossierFields)
BLANK = "blank"
UNKNOWN = "khac"
HEADER_ONLY_CONFIDENCE = 0.5
UNTITLED_CONFIDENCE = 0.3
MODEL_SWITCH = 0.8  # the model this sure of another type opens a new document on an untitled page
AGREE_CONFIDENCE = 0.98  # an exact title the model agrees with
DISAGREE_CONFIDENCE = 0.75  # an exact title the model is sure is something else: kept, sent to review
CONTINUES_CONFIDENCE = 0.8  # an unnumbered page without a title, taken as the rest of the document before it
NOT_RECEIPT_TYPES = {"phieu_tiep_nhan", UNKNOWN}


def key_settings(settings: Settings, procedure: str | None, model: ModelRef | None = None) -> dict:
    """ClassifySettings whole, the caller's procedure and the trained model's digest (``rules`` without one)."""
    return {**key_of(ClassifySettings.of(settings)), "procedure": procedure, "classifier": model.digest if model else "rules"}


def classify_key(ocr_key: str, settings: Settings, procedure: str | None, model: ModelRef | None = None) -> str:
    return step_key("classify", VERSION, key_settings(settings, procedure, model), ocr_key)


@dataclass(frozen=True)
class _Reading:
    n: int
    rules: rules.PageRules
    model: dict[str, float] | None  # calibrated probabilities, None without a model
    after_blank: bool

    @property
    def model_top(self) -> tuple[str, float] | None:
        if not self.model:
            return None
        best = max(self.model, key=self.model.__getitem__)
        return best, self.model[best]

    def knows(self, doc_type: str) -> bool:
        """The model was trained on this type (else its silence about it means nothing)."""
        return self.model is not None and doc_type in self.model


def predict_pages(pages: list[tuple[int, str, bool]], tax: Taxonomy, title_lines: int,
                  model: ClassifierModel | None = None) -> list[PagePrediction]:
    """Type and boundary of each page: (number, text, blank) in page order."""
    texts = [text for _, text, blank in pages if not blank]
    probabilities = iter(model.predict(texts) if model else [None] * len(texts))
    out: list[PagePrediction] = []
    previous: PagePrediction | None = None
    opening = 0.0  # confidence of the open document's type
    after_blank = False
    for n, text, blank in pages:
        if blank:
            out.append(PagePrediction(n=n, type=BLANK, confidence=1.0, starts=False, evidence=["blank"]))
            after_blank = previous is not None
            continue
        reading = _Reading(n, rules.read(text, tax, title_lines), next(probabilities), after_blank)
        starts, why = _opens_document(reading, previous)
        if starts:
            doc_type, confidence, evidence = _opening_type(reading)
            opening = confidence
        else:
            doc_type, confidence, evidence = _continuation_type(reading, previous, opening)
        title = reading.rules.title.line if reading.rules.title else None
        mark = reading.rules.mark
        previous = PagePrediction(n=n, type=doc_type, confidence=round(confidence, 3), starts=starts,
                                  evidence=why + evidence, title=title,
                                  mark=f"{mark[0]}/{mark[1] or '?'}" if mark else None)
        out.append(previous)
        after_blank = False
    return out


def _opens_document(page: _Reading, previous: PagePrediction | None) -> tuple[bool, list[str]]:
    marks = page.rules
    if previous is None:
        return True, ["first page"]
    if (marks.numbered_later or marks.continued) and not marks.title:
        mark = f"page {marks.mark[0]}/{marks.mark[1] or '?'}" if marks.mark else "continued"
        return False, [mark]
    if marks.title:
        return True, ["title"]
    if marks.header:
        return True, ["header"]
    if marks.numbered_first:
        return True, ["page 1"]
    if page.after_blank:
        return True, ["after blank"]
    top = page.model_top
    if top and top[0] != previous.type and top[1] >= MODEL_SWITCH:
        return True, [f"model: {top[0]}"]
    return False, ["no title"]


def _opening_type(page: _Reading) -> tuple[str, float, list[str]]:
    title, top = page.rules.title, page.model_top
    if title and title.exact:
        if not page.knows(title.type):
            return title.type, title.confidence, ["exact title"]
        agree = page.model[title.type]
        if top[0] == title.type:
            return title.type, max(AGREE_CONFIDENCE, agree), ["exact title", f"model agrees {agree:.2f}"]
        if top[1] >= MODEL_SWITCH and agree < 0.2:
            return title.type, DISAGREE_CONFIDENCE, ["exact title", f"model says {top[0]} {top[1]:.2f}"]
        return title.type, title.confidence, ["exact title", f"model {agree:.2f}"]
    if title:  # a garbled title: the closest label
        if not page.knows(title.type):
            return title.type, title.confidence, [f"fuzzy title {title.confidence:.2f}"]
        agree = page.model[title.type]
        if top[0] == title.type:
            return title.type, max(title.confidence, agree), [f"fuzzy title {title.confidence:.2f}", f"model agrees {agree:.2f}"]
        if top[1] > title.confidence:
            return top[0], top[1] * 0.95, [f"fuzzy title says {title.type}", f"model {top[1]:.2f}"]
        return title.type, title.confidence * 0.9, [f"fuzzy title {title.confidence:.2f}", f"model says {top[0]}"]
    if top:
        return top[0], top[1], [f"model {top[1]:.2f}"]
    if page.rules.header:
        return UNKNOWN, HEADER_ONLY_CONFIDENCE, ["no title"]
    return UNKNOWN, UNTITLED_CONFIDENCE, ["no title"]


def _continuation_type(page: _Reading, previous: PagePrediction, opening: float) -> tuple[str, float, list[str]]:
    """The rest of the open document: its type, as sure as its opening page at most."""
    marked = page.rules.numbered_later or page.rules.continued
    top = page.model_top
    if top and page.knows(previous.type):
        if top[0] == previous.type:
            return previous.type, min(opening, max(top[1], CONTINUES_CONFIDENCE)), [f"model agrees {top[1]:.2f}"]
        return previous.type, min(opening, CONTINUES_CONFIDENCE if marked else 0.6), [f"model says {top[0]} {top[1]:.2f}"]
    if marked:
        return previous.type, opening, []
    return previous.type, min(opening, CONTINUES_CONFIDENCE), []


def documents_of(predictions: list[PagePrediction]) -> list[Document]:
    """Documents from page predictions: a new one at each opening page; blank pages in none."""
    documents: list[Document] = []
    for page in predictions:
        if page.type == BLANK:
            continue
        if page.starts or not documents:
            documents.append(Document(type=page.type, confidence=page.confidence, pages=[page.n], title=page.title))
        else:
            documents[-1].pages.append(page.n)
            documents[-1].confidence = min(documents[-1].confidence, page.confidence)
    return documents


def infer_procedure(types: set[str], cat: Catalog) -> tuple[str | None, dict[str, float]]:
    """The catalogued procedure the documents fit best: all its required types present, most of the
    dossier's other types among its known ones. None when no procedure fits, or two fit equally."""
    specific = types - NOT_RECEIPT_TYPES
    scores: dict[str, float] = {}
    for code, procedure in cat.procedures.items():
        required = set(procedure.required)
        if not required or not required <= types:
            continue
        known = procedure.known()
        scores[code] = round(len(specific & known) / len(specific | required), 3)
    if not scores:
        return None, scores
    ranked = sorted(scores.values(), reverse=True)
    if len(ranked) > 1 and ranked[0] == ranked[1]:
        return None, scores
    return max(scores, key=scores.__getitem__), scores


def _as_list(value: str | list[str] | None) -> list[str]:
    return value if isinstance(value, list) else [value] if isinstance(value, str) else []


def _document_fields(document: Document, texts: dict[int, str], tax: Taxonomy) -> None:
    """The labelled values its type declares (sohoa/domain/fields.py), and every ID number in it."""
    text = "\n".join(texts[n] for n in document.pages)
    specs = next((t.fields for t in tax.types if t.code == document.type), {})
    document.fields.update(labelled.extract(text, specs))
    numbers = identifiers.find_twelve_digit_numbers(text)
    labelled_numbers = [v for name, spec in specs.items() if spec.kind == "cccd"
                        for v in _as_list(document.fields.get(name))]
    numbers += [n for n in labelled_numbers if n not in numbers]  # a misread one is invalid, not missing
    valid = [n for n in numbers if identifiers.cccd_problem(n) is None]
    if valid:
        document.fields["cccd"] = valid
    if len(valid) < len(numbers):
        document.fields["cccd_invalid"] = [n for n in numbers if n not in valid]


def classify(
    ocr: OcrResult, capture: CaptureResult, settings: Settings, key: str, procedure: str | None = None,
    store: Store | None = None, model: ClassifierModel | None = None, model_ref: ModelRef | None = None,
) -> ClassifyResult:
    """Split and type the documents; with the work ``store``, also read the receipt's QR code."""
    tax = taxonomy(settings.taxonomy)
    blank = {page.n for page in capture.pages if page.blank}
    texts = {page.n: page.text for page in ocr.pages}
    predictions = predict_pages([(p.n, p.text, p.n in blank) for p in ocr.pages], tax, settings.title_lines, model)
    documents = documents_of(predictions)
    for document in documents:
        _document_fields(document, texts, tax)
    qr_codes = _receipt_qr_codes(documents, capture, store) if store is not None else []
    fields = _dossier_fields(documents, texts, qr_codes)
    inferred, scores = infer_procedure({d.type for d in documents}, catalog(settings.catalog))
    fields.inferred_procedure = inferred or None
    if procedure:
        chosen, source = procedure, "caller"
    elif fields.receipt_procedure:
        chosen, source = fields.receipt_procedure, "receipt"
    elif inferred:
        chosen, source = inferred, "inferred"
    else:
        chosen, source = None, "none"
    return ClassifyResult(key=key, documents=documents, procedure=chosen, procedure_source=source, fields=fields,
                          pages=predictions, classifier=model_ref.key if model_ref else "rules")


def with_documents(classified: ClassifyResult, documents: list[Document], procedure: str | None, ocr: OcrResult,
                   settings: Settings) -> ClassifyResult:
    """The classification with the documents an operator set (types, boundaries): their fields read
    anew from the pages, the dossier's ID numbers and inferred procedure recomputed."""
    tax = taxonomy(settings.taxonomy)
    texts = {page.n: page.text for page in ocr.pages}
    documents = [d.model_copy(update={"fields": {}}) for d in documents]
    for document in documents:
        _document_fields(document, texts, tax)
    inferred, _ = infer_procedure({d.type for d in documents}, catalog(settings.catalog))
    fields = classified.fields.model_copy(update={**_id_numbers(documents), "inferred_procedure": inferred or None})
    chosen = procedure or classified.procedure
    source = "operator" if procedure and procedure != classified.procedure else classified.procedure_source
    return classified.model_copy(update={"documents": documents, "fields": fields, "procedure": chosen,
                                         "procedure_source": source})


def _receipt_pages(documents: list[Document]) -> list[int]:
    return [n for d in documents if d.type == "phieu_tiep_nhan" for n in d.pages]


def _receipt_qr_codes(documents: list[Document], capture: CaptureResult, store: Store) -> list[str]:
    """Dossier codes in QR codes on the receipt pages (the first page when no receipt was typed)."""
    wanted = _receipt_pages(documents) or [capture.pages[0].n]
    codes: list[str] = []
    for page in capture.pages:
        if page.n in wanted:
            gray = imaging.decode_gray(store.get_bytes(page.key))
            codes += identity.dossier_codes_in_qr(identity.read_qr_codes(gray, page.dpi))
    return list(dict.fromkeys(codes))


def _dossier_fields(documents: list[Document], texts: dict[int, str], qr_codes: list[str]) -> DossierFields:
    """Dossier code (QR first, then the receipt's text, then any text), receipt procedure, CCCD numbers."""
    fields = DossierFields(**_id_numbers(documents))
    receipt_text = "\n".join(texts[n] for n in _receipt_pages(documents))
    all_text = "\n".join(texts[n] for n in sorted(texts))
    printed = [(codes[0], source) for text, source in ((receipt_text, "receipt_text"), (all_text, "text"))
               if (codes := identifiers.find_dossier_codes(text))]
    if qr_codes:
        fields.dossier_code, fields.dossier_code_source = qr_codes[0], "qr"
        if printed and printed[0][0] != qr_codes[0]:
            fields.dossier_code_printed = printed[0][0]
    elif printed:
        fields.dossier_code, fields.dossier_code_source = printed[0]
    procedures = identifiers.find_procedure_codes(receipt_text)
    fields.receipt_procedure = procedures[0] if procedures else None
    return fields


def _id_numbers(documents: list[Document]) -> dict[str, list[str] | None]:
    """The dossier's ID numbers: the valid ones of every document, and those that fail their check (None: none)."""
    valid = list(dict.fromkeys(n for d in documents for n in d.fields.get("cccd", [])))
    invalid = list(dict.fromkeys(n for d in documents for n in d.fields.get("cccd_invalid", [])))
    return {"cccd": valid, "cccd_invalid": invalid or None}
