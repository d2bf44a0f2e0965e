"""Run one dossier from input to archive (or quarantine) and its review, without Prefect.

Every decision about a run lives here: what refreshing a step means, when an input is a
duplicate or an archived dossier still waiting for a person, which steps run, what a failure
leaves in quarantine, when a review is queued, asked and applied, and which inputs of a batch
share their content. An orchestrator adds only what it has: a cache (the Prefect flows pass
their result storage, everything else the work store, both the same ``results/<key>``
objects), and hooks (logging into its UI, artifacts, suspending for a form, a global OCR limit).
``sohoa eval``, the benchmarks and the fast tests run the same code as the flows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from sohoa.domain.model import ModelRef
from sohoa.kernel.errors import NO_SPACE, InputRefused, no_space, reason_code
from sohoa.kernel.models import (
    ArchiveResult,
    CaptureResult,
    Intake,
    Manifest,
    Outcome,
    Refusal,
    SourceInfo,
    StepRecord,
)
from sohoa.kernel.settings import Settings
from sohoa.services import claims, review, review_queue
from sohoa.services.claims import ClaimSettings, ClaimTimeout
from sohoa.services.plan import TABLE, Admission, Planning, Step, StepContext, admit, contents, from_first, plan
from sohoa.services.quarantine import MAX_COPY_BYTES, quarantine, refuse_or_fail
from sohoa.services.results import WorkStoreCache
from sohoa.steps import archive as archiving
from sohoa.steps import capture as capturing
from sohoa.steps import ocr as engine
from sohoa.storage import Store, open_store

_log = logging.getLogger("sohoa.run")


class StepCache(Protocol):
    """Where step results are kept and found again by key (sohoa/services/results.WorkStoreCache, or Prefect's)."""

    def has(self, key: str) -> bool: ...

    def run(self, name: str, key: str | None, refresh: bool, types: tuple[type[BaseModel], ...],
            compute: Callable[[], BaseModel]) -> tuple[BaseModel, bool]: ...


class Hooks:
    """What an orchestrator adds around a run. The defaults are a plain process: it logs to ``sohoa.run``,
    publishes nothing, and cannot wait for a person (a dossier that needs review is queued)."""

    @property
    def log(self) -> Any:
        return _log

    def can_suspend(self) -> bool:
        return False

    def flow_run_id(self) -> str | None:
        return None

    def ask(self, archived: ArchiveResult, captured: CaptureResult, settings: Settings,
            timeout_s: int | None) -> review.ReviewDecision:
        raise NotImplementedError("this run cannot wait for an operator")

    def ocr_progress(self, captured: CaptureResult) -> Callable[[int, int], None] | None:
        return None

    def publish(self, manifest: Manifest, captured: CaptureResult, work: Store, settings: Settings) -> None:
        return None

    def wrap(self, step: str, compute: Callable[[], BaseModel]) -> Callable[[], BaseModel]:
        """Around a step's computation (the flows hold a slot of the global OCR limit here)."""
        return compute


@dataclass
class RunContext:
    """One run's settings and the caller's choices."""

    settings: Settings
    procedure: str | None = None
    decision: review.ReviewDecision | None = None  # an operator's decision to apply without asking
    review_timeout_s: int | None = None
    intake: Intake | None = None
    on_archived: Callable[[ArchiveResult], None] | None = None  # once the archive is written and verified
    hooks: Hooks = field(default_factory=Hooks)
    claims: ClaimSettings = field(default_factory=ClaimSettings)  # lease and wait of the claim on the input's content


def run_dossier(source: str, context: RunContext, cache: StepCache | None = None,
                refresh: list[str] | None = None) -> Outcome:
    """One dossier from input to archive (or quarantine), then its review; raises after quarantining on failure.

    Content that is not archived yet is processed under a claim on its SHA-256 (sohoa/services/claims.py), held
    until the archive is written and verified (or the input refused or failed): a second run of the same bytes,
    from any process or machine, waits for it and then reports a duplicate of its archive.

    ``refresh`` names steps to recompute (each refreshes the steps after it); ValueError for an unknown one."""
    started, settings, path, log = time.perf_counter(), context.settings, Path(source), context.hooks.log
    fresh = from_first(refresh)
    work, store = _ready(settings)
    info: SourceInfo | None = None
    cache = cache or WorkStoreCache(work)
    try:
        admission = admit(path, settings, context.procedure, store, refresh=bool(refresh))
        info = admission.info
        duplicate, archived = _already(admission, source, context, store, started)
        if duplicate is None and archived is None:
            with claims.take(store, info.sha256, claims.holder(context.hooks.flow_run_id()), context.claims, log):
                # the run that held the claim before (waited for, or just finished) may have archived the content
                admission = admission.looked_up(store, refresh=bool(refresh))
                duplicate, archived = _already(admission, source, context, store, started)
                if duplicate is None and archived is None:
                    done = run_steps(path, admission, context, (work, store), cache, fresh)
        if duplicate is not None:
            log.info("%s is already archived as %s with these settings: not processed again", path.name, duplicate.dossier_id)
            return duplicate
        if archived is not None:
            done = run_steps(path, admission, context, (work, store), cache, fresh, archived)
    except ClaimTimeout:
        raise  # the input is fine and another run is processing it: nothing to quarantine
    except InputRefused as refusal:
        log.warning("refused %s: %s", path.name, refusal)
        outcome = refuse_or_fail(store, path, refusal, sha256=info.sha256 if info else None,
                                 duration_s=_since(started), max_copy_bytes=settings.max_input_bytes)
        if outcome.status == "failed":
            log.error("%s: %s", path.name, outcome.reason.message if outcome.reason else "not quarantined")
        return outcome
    except Exception as exc:
        quarantine_failure(store, path, exc, info, log, max_copy_bytes=settings.max_input_bytes)
        raise
    return _outcome(source, _after_archive(done, source, context), started)


def _already(admission: Admission, source: str, context: RunContext, store: Store,
             started: float) -> tuple[Outcome | None, ArchiveResult | None]:
    """A duplicate to report, or the archive whose review this run settles, or neither: the content is to process."""
    duplicate = admission.duplicate(source, store, _since(started))
    if duplicate is None:
        return None, None
    if admission.earlier is not None and review_pending(duplicate, context, store):
        return None, _current(store, admission.earlier)
    return duplicate, None


def _ready(settings: Settings) -> tuple[Store, Store]:
    """The work and archive stores, prepared (a deployment run has no CLI to prepare them)."""
    work, store = open_store(settings.work), open_store(settings.archive)
    store.ensure_ready()
    work.ensure_ready()
    return work, store


def run_steps(path: Path, admission: Admission, context: RunContext, stores: tuple[Store, Store], cache: StepCache,
              fresh: set[str], archived: ArchiveResult | None = None, until: str = "archive") -> StepContext:
    """The steps of the table in order, through ``cache``, on the (work, archive) ``stores``, up to ``until``; the
    archive step only when there is no ``archived`` result yet. A capture Refusal becomes InputRefused for the
    caller to quarantine."""
    settings = context.settings
    planning = Planning(admission.info, settings, context.procedure, admission.model)
    ctx = StepContext(path, planning, *stores, keys=admission.steps,
                      intake=context.intake, ocr_progress=context.hooks.ocr_progress)
    if "ocr" in fresh or not cache.has(admission.steps["ocr"].key):
        engine.warm_up(settings)  # the engines load while the dossier is captured
    for step in TABLE:
        if step.name == "archive" and archived is not None:
            ctx.done["archive"] = archived
        else:
            _run_step(step, ctx, admission, cache, fresh, context.hooks)
        if step.name == until:
            break
    return ctx


def _run_step(step: Step, ctx: StepContext, admission: Admission, cache: StepCache, fresh: set[str], hooks: Hooks) -> None:
    planned = admission.steps.get(step.name)
    key = planned.key if planned else None
    started = time.perf_counter()
    result, reused = cache.run(step.name, key, step.name in fresh, step.results,
                               hooks.wrap(step.name, lambda: step.run(ctx, key or "")))
    if isinstance(result, Refusal):
        raise InputRefused(result.code, result.message)
    ctx.done[step.name] = result
    if planned is not None:
        ctx.records[step.name] = StepRecord(version=planned.version, cache_key=planned.key, cached=reused,
                                            duration_s=_since(started))
    if step.name == "capture":
        hooks.log.info("captured %d pages from %s", len(result.pages), admission.info.media_type)


def _after_archive(done: StepContext, source: str, context: RunContext) -> ArchiveResult:
    """Tell the caller the archive is safe, publish it, then settle its review when it needs one."""
    archived: ArchiveResult = done.done["archive"]
    context.hooks.log.info("%s is %s as %s", done.path.name, archived.manifest.status, archived.dossier_id)
    if context.on_archived is not None:
        context.on_archived(archived)
    context.hooks.publish(archived.manifest, done.done["capture"], done.work, context.settings)
    if context.decision is not None or archived.manifest.status == "needs_review":
        return review_dossier(done, source, context)
    return archived


def review_pending(duplicate: Outcome, context: RunContext, store: Store) -> bool:
    """An archived dossier still waiting for a person: a decision to apply, or a form to show (a run that can
    suspend). The same input dropped again while its form waits in the UI is a duplicate, not a second form."""
    if context.decision is not None:
        return True
    hooks = context.hooks
    if not hooks.can_suspend() or duplicate.dossier_id is None:
        return False
    queued = review_queue.get(store, duplicate.dossier_id)
    if queued is None:
        return False
    # this run's own form (resumed), or no form waits in the UI for it (a batch handed it over, or it expired)
    return queued.flow_run_id == hooks.flow_run_id() or queued.state() != "in the Prefect UI"


def review_dossier(done: StepContext, source: str, context: RunContext) -> ArchiveResult:
    """Queue the dossier; ask when the run can suspend; apply the decision once there is one."""
    archived, hooks, settings = done.done["archive"], context.hooks, context.settings
    timeout_s, decision = context.review_timeout_s or settings.review_timeout_s, context.decision
    if decision is None:
        suspending = hooks.can_suspend()
        queue(archived, source, context.procedure, settings, timeout_s, hooks.flow_run_id() if suspending else None)
        if not suspending:
            hooks.log.info("%s needs review: queued (sohoa reviews; sohoa review %s ...)", archived.dossier_id,
                           archived.dossier_id)
            return archived
        decision = hooks.ask(archived, done.done["capture"], settings, timeout_s)  # suspends; returns on resume
    d = done.done
    after = review.settle(archived.dossier_id, decision, d["capture"], d["ocr"], d["classify"], settings)
    hooks.log.info("%s: %s by %s (revision %d)", archived.dossier_id, after.status, decision.operator, after.revision)
    return archived.model_copy(update={"manifest": after})


def queue(archived: ArchiveResult, source: str, procedure: str | None, settings: Settings, timeout_s: int | None,
          flow_run_id: str | None) -> None:
    """The dossier in the review queue, before anyone is asked: nothing waits only in memory. A form in a
    suspended flow run (``flow_run_id``) expires with the run's timeout."""
    now = datetime.now(UTC)
    expires = (now + timedelta(seconds=timeout_s)).isoformat(timespec="seconds") if flow_run_id and timeout_s else None
    review_queue.put(open_store(settings.archive), review_queue.QueuedReview(
        dossier_id=archived.dossier_id, manifest_key=archived.prefix + archiving.MANIFEST, source=source, procedure=procedure,
        queued_at=now.isoformat(timespec="seconds"), expires_at=expires, flow_run_id=flow_run_id,
        failed_checks=[f"{c.id}: {c.message}" for c in archived.manifest.verification.checks if not c.ok]))


def _current(store: Store, earlier: archiving.ArchivedSource) -> ArchiveResult:
    """The archive as it stands (a dossier waiting for review is not archived again: it has its decisions)."""
    prefix, manifest = review.load(store, earlier.dossier_id)
    return ArchiveResult(dossier_id=earlier.dossier_id, prefix=prefix, manifest_url=store.url_for(earlier.manifest_key),
                         manifest=manifest)


def _outcome(source: str, archived: ArchiveResult, started: float) -> Outcome:
    manifest = archived.manifest
    return Outcome(
        input=source, status=manifest.status, dossier_id=archived.dossier_id, manifest=archived.manifest_url,
        **contents(manifest),
        cached_steps=[name for name, record in manifest.steps.items() if record.cached], duration_s=_since(started),
    )


def failure_reason(exc: BaseException) -> tuple[str, str]:
    """The machine-readable code and one-line message a failure leaves in quarantine."""
    full = no_space(exc)
    if full:
        return NO_SPACE, full
    return reason_code(exc), f"{type(exc).__name__}: {exc}"[:500]


def quarantine_failure(store: Store, path: Path, exc: Exception, info: SourceInfo | None, log: Any = _log,
                       max_copy_bytes: int = MAX_COPY_BYTES) -> None:
    """Keep a failed input beside a machine-readable reason; a storage outage may prevent even that."""
    try:
        code, message = failure_reason(exc)
        quarantine(store, path, code=code, message=message, step="pipeline", sha256=info.sha256 if info else None,
                   max_copy_bytes=max_copy_bytes)
    except Exception as second:  # the input stays where it was; say so in the log
        log.error("could not quarantine %s: %s", path.name, second)


def first_copies(hashes: list[str | None]) -> list[int | None]:
    """For each input of a batch, the index of an earlier input with the same content (None: the first, or
    unknown). A later copy waits for its first, then finds it archived: the same content is processed once."""
    first: dict[str, int] = {}
    copies: list[int | None] = []
    for index, sha256 in enumerate(hashes):
        earlier = first.setdefault(sha256, index) if sha256 else index
        copies.append(earlier if earlier != index else None)
    return copies


def content_hash(source: str, settings: Settings) -> str | None:
    """The input's SHA-256, or None when it cannot be read (its own run says why)."""
    try:
        return capturing.describe_source(Path(source), settings).sha256
    except Exception:
        return None


def read(source: Path, settings: Settings, cache: StepCache | None = None, model: ModelRef | None = None) -> StepContext:
    """Capture and OCR only, through the cache (an evaluation, a benchmark): nothing is archived or quarantined,
    and a bad input raises InputRefused. The context's ``keys`` name every step's key, classify's included."""
    info = capturing.describe_source(source, settings)
    admission = Admission(info=info, steps=plan(info, settings, None, model), earlier=None, model=model)
    work = open_store(settings.work)
    work.ensure_ready()
    stores = (work, open_store(settings.archive))
    return run_steps(source, admission, RunContext(settings), stores, cache or WorkStoreCache(work), set(), until="ocr")




def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)
