"""Operator review in the Prefect UI: the flow run suspends with a typed form, pre-filled with the
machine's reading, and applies the operator's decision when it is resumed.

A dossier that verification sends to review is archived as ``needs_review`` and queued
(sohoa/services/review_queue.py) first, so nothing waits only in memory. In a deployment run the flow
then suspends (the worker is free meanwhile) with a form: approve or reject with a reason,
document types and pages (boundaries), the procedure. Resumed, the flow runs again from the
top, every step comes back cached, the form's answer is read back, and the decision is applied:
the documents are re-read for their fields and re-verified, per-document PDFs are written for
documents whose pages changed, and the manifest gets a new revision with the decision
(sohoa/services/review.py). An answer that cannot apply (pages missing, no reason for a rejection) is
shown to the operator in a new form. A review not answered in time fails the suspended run at
Prefect's end; the dossier stays queued for ``sohoa review`` or a ``process-dossier`` run given
a ``decision``.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Literal

from prefect import get_run_logger
from prefect.context import FlowRunContext, TaskRunContext
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, Field

from sohoa.domain.catalog import catalog, taxonomy
from sohoa.kernel.models import ArchiveResult, CaptureResult
from sohoa.kernel.settings import Settings
from sohoa.orchestration import artifacts
from sohoa.services import review
from sohoa.services.attention import pages_to_look_at
from sohoa.storage import open_store

MAX_ATTEMPTS = 5


def can_suspend() -> bool:
    """A deployment's flow run (not a task of one): Prefect can stop it and start it again on resume."""
    context = FlowRunContext.get()
    return (context is not None and context.flow_run is not None and context.flow_run.deployment_id is not None
            and TaskRunContext.get() is None)


def flow_run_id() -> str | None:
    context = FlowRunContext.get()
    return str(context.flow_run.id) if context and context.flow_run else None


def review_form(codes: list[str]) -> type[RunInput]:
    """The form's model: the UI draws it from this schema (a list of codes becomes a drop-down)."""
    document_type = Enum("DocumentType", {code: code for code in codes}, type=str)

    class Document(BaseModel):
        pages: str = Field(description="Pages of the dossier, e.g. 2-3 or 2,3 / Các trang")
        type: document_type = Field(description="Document type / Loại văn bản")  # type: ignore[valid-type]

    class ReviewForm(RunInput):
        operator: str = Field(description="Your name, recorded with the decision / Tên cán bộ xử lý")
        action: Literal["approve", "reject"] = Field("approve", description="approve: archive as passed; reject: give a reason")
        documents: list[Document] = Field(description="The documents as they really are: fix a type, or the pages of each")
        procedure: str = Field("", description="Procedure code, e.g. 1.001193 / Mã thủ tục")
        reason: str = Field("", description="Why the dossier is rejected / Lý do từ chối")

    return ReviewForm


def parse_pages(text: str) -> list[int]:
    """``"2-3"`` -> [2, 3]; ``"2, 5"`` -> [2, 5]; ValueError for anything else."""
    pages: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        found = re.fullmatch(r"(\d+)\s*-\s*(\d+)|(\d+)", part)
        if not found:
            raise ValueError(f"{text!r} is not a list of pages")
        low, high = (int(found.group(1)), int(found.group(2))) if found.group(1) else (int(found.group(3)),) * 2
        pages += range(low, high + 1)
    return pages


def to_decision(answer: RunInput) -> review.ReviewDecision:
    try:
        documents = [review.DocumentChoice(pages=parse_pages(d.pages), type=str(getattr(d.type, "value", d.type)))
                     for d in answer.documents]
    except ValueError as exc:
        raise review.ReviewError(str(exc)) from None
    return review.ReviewDecision(operator=answer.operator, action=answer.action, documents=documents,
                                 procedure=answer.procedure or None, reason=answer.reason or None)


def _description(archived: ArchiveResult, attention: str, problems: list[str]) -> str:
    head = ["**The last answer could not be applied / Chưa áp dụng được:** " + "; ".join(problems), ""] if problems else []
    return "\n".join(head) + attention


def ask(archived: ArchiveResult, capture: CaptureResult, settings: Settings, timeout_s: int | None) -> review.ReviewDecision:
    """Suspend for the operator's decision (raises Prefect's Pause); on resume, the valid decision."""
    manifest = archived.manifest
    codes = sorted(taxonomy(settings.taxonomy).codes())
    form = review_form(codes)
    prefill = {"operator": "", "action": "approve", "procedure": manifest.procedure or "", "reason": "",
               "documents": [{"pages": ", ".join(map(str, d.pages)), "type": d.type} for d in manifest.documents]}
    pages = pages_to_look_at(manifest, settings)
    attention = artifacts.attention_markdown(manifest, capture, pages, open_store(settings.work), settings)
    problems: list[str] = []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        answer = suspend_flow_run(wait_for_input=form.with_initial_data(description=_description(archived, attention, problems),
                                                                      **prefill),
                                  timeout=timeout_s, key=f"review-{attempt}")
        try:
            decision = to_decision(answer)
            problems = review.problems_with(decision, manifest, set(codes), set(catalog(settings.catalog).procedures))
        except review.ReviewError as exc:
            problems = [str(exc)]
        if not problems:
            return decision
        get_run_logger().warning("review answer %d of %s cannot apply: %s", attempt, archived.dossier_id, "; ".join(problems))
        prefill = {**prefill, **answer.model_dump(exclude={"metadata"})}
    raise review.ReviewError(f"{MAX_ATTEMPTS} answers could not be applied: {'; '.join(problems)}")
