"""``sohoa`` command line.

``sohoa run`` processes each INPUT as one dossier through the Prefect flow. With no
``PREFECT_API_URL`` set, it starts a private Prefect server of its own (sohoa/orchestration/embedded.py).
One line per dossier is printed (JSON with ``--json``); a bad input is reported on its own
line and never stops the others. Prefect is imported only when a flow has to run, and the
module imports little at the top, so the first line is on the terminal within a second.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic_core import ValidationError  # what pydantic raises, without importing pydantic (a quick first line)

from sohoa.kernel.errors import ConfigurationError, ExitCode, SohoaError, UsageError

if TYPE_CHECKING:
    from sohoa.kernel.models import Outcome

_PREFECT_DEFAULTS = {
    # the first flow with a fresh PREFECT_HOME can take ~20 s to start the embedded server on 2 cores
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "sohoa",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sohoa", description="Digitize scanned dossiers into a verified archive.")
    parser.add_argument("--version", action="version", version=f"sohoa {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="process each INPUT (file or folder) as one dossier")
    run.add_argument("inputs", nargs="+", metavar="INPUT", help="PDF, TIFF, JPEG/PNG file, or a folder of page images")
    run.add_argument("--archive", help="archive store URL: DIR, file://DIR or s3://bucket/prefix (default: SOHOA_ARCHIVE)")
    run.add_argument("--work", help="work store URL for page images and cached step results (default: SOHOA_WORK)")
    run.add_argument("--procedure", help="procedure code such as 1.001193, when not printed on the receipt")
    run.add_argument("--refresh", action="append", default=[], metavar="STEP",
                     help="recompute STEP and every step after it even if cached (repeatable)")
    run.add_argument("--json", action="store_true", help="print one JSON object per dossier")
    run.add_argument("-q", "--quiet", action="store_true", help="only print results (no progress logs)")
    commands.add_parser("schema", help="print the JSON Schema of manifest.json")
    evaluate = commands.add_parser("eval", help="score classification and splitting on a folder of labelled dossiers")
    evaluate.add_argument("folder", type=Path, help="inputs with <input>.truth.json beside them (see sohoa-synth --eval-set)")
    _store_options(evaluate)
    evaluate.add_argument("--require", action="append", default=[], metavar="METRIC=VALUE",
                          help=f"exit 5 unless METRIC >= VALUE (repeatable); metrics: {', '.join(EVAL_METRICS)}")
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")
    train = commands.add_parser("train", help="train a new classifier version from operators' confirmed and corrected documents")
    _store_options(train)
    train.add_argument("--json", action="store_true")
    review = commands.add_parser("review", help="record an operator's decision on an archived dossier")
    review.add_argument("dossier", help="dossier id (the last folder of dossiers/<agency>/<procedure>/<year>/<id>/)")
    review.add_argument("--archive", help="archive store URL (default: SOHOA_ARCHIVE)")
    review.add_argument("--work", help="work store URL (default: SOHOA_WORK): a queued dossier approved or rejected is "
                                       "run again, its steps taken from there instead of being recomputed")
    review.add_argument("--by", default=os.environ.get("USER", ""), help="the operator's name (default: $USER)")
    review.add_argument("--type", action="append", default=[], metavar="N=TYPE",
                        help="correct the type of document N (1-based, as in the manifest) (repeatable)")
    review.add_argument("--approve", action="store_true", help="confirm every other document's type and pass the dossier")
    review.add_argument("--reject", metavar="REASON", help="reject the dossier with this reason")
    review.add_argument("--procedure", help="set the procedure code")
    review.add_argument("--json", action="store_true", help="print the new revision as JSON")
    reviews = commands.add_parser("reviews", help="list the dossiers waiting for a person (the review queue)")
    reviews.add_argument("--archive", help="archive store URL (default: SOHOA_ARCHIVE)")
    reviews.add_argument("--json", action="store_true", help="one JSON object per queued dossier")
    watch = commands.add_parser("watch", help="watch an inbox: one process-drop flow run per dropped dossier "
                                              "(needs a Prefect server with the deployments: PREFECT_API_URL)")
    watch.add_argument("inbox", help="inbox store URL (s3://bucket/prefix or a directory); one top-level prefix per station")
    watch.add_argument("--archive", help="archive store URL for the dossiers (default: SOHOA_ARCHIVE in the worker)")
    watch.add_argument("--procedure", help="procedure code for every drop")
    watch.add_argument("--poll", type=float, default=10.0, metavar="SECONDS", help="seconds between listings (default 10)")
    watch.add_argument("--scans", type=int, metavar="N", help="stop after N listings (default: watch until interrupted)")
    watch.add_argument("--status", action="store_true", help="print the watcher's health and the inbox's state as JSON, "
                                                           "exit 1 if the last scan is older than 3 poll intervals")
    check = commands.add_parser("check", help="verify every archived file against its manifest's checksums; find orphans, "
                                               "incomplete archives and missing originals (exit 6 on any problem)")
    check.add_argument("--archive", help="archive store URL (default: SOHOA_ARCHIVE)")
    check.add_argument("--quick", action="store_true", help="compare sizes only, not SHA-256")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    report = commands.add_parser("report", help="the digitization report: per agency, station, procedure and period")
    report.add_argument("--archive", help="archive store URL (default: SOHOA_ARCHIVE)")
    report.add_argument("--inbox", help="inbox store URL: counts its duplicates and refusals too")
    report.add_argument("--period", choices=["day", "month", "year"], default="month")
    report.add_argument("--since", metavar="YYYY-MM-DD")
    report.add_argument("--until", metavar="YYYY-MM-DD")
    report.add_argument("--format", choices=["table", "csv", "json"], default="table")
    report.add_argument("--save", action="store_true", help="also write reports/digitization-*.csv/json to the archive store")
    find = commands.add_parser("find", help="earlier archived documents of a person or dossier, to reuse them "
                                            "(tái sử dụng kết quả số hóa)")
    find.add_argument("--archive", help="archive store URL (default: SOHOA_ARCHIVE)")
    find.add_argument("--cccd", metavar="NUMBER", help="a 12-digit CCCD or an old 9-digit CMND number")
    find.add_argument("--dossier", metavar="CODE", help="dossier code (or dossier id)")
    find.add_argument("--type", metavar="TYPE", help="document type (taxonomy code)")
    find.add_argument("--procedure", metavar="CODE", help="procedure code such as 1.001193")
    find.add_argument("--since", metavar="YYYY-MM-DD", help="received on or after this day (UTC)")
    find.add_argument("--until", metavar="YYYY-MM-DD", help="received on or before this day (UTC)")
    find.add_argument("--rebuild", action="store_true", help="rebuild the index from the archive's manifests first")
    find.add_argument("--json", action="store_true", help="one JSON object per document")
    return parser


# what `sohoa eval --require` can ask for: the report's scores, each better when higher (sohoa/services/evaluate.py)
EVAL_METRICS = ("page_accuracy", "boundary_precision", "boundary_recall", "boundary_f1", "high_confidence_accuracy",
                "high_confidence_share", "procedure_accuracy")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("sohoa")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        return "unknown"


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--archive", help="archive store URL, where models are kept (default: SOHOA_ARCHIVE)")
    parser.add_argument("--work", help="work store URL (default: SOHOA_WORK)")


def _print(outcome: Outcome, as_json: bool) -> None:
    if as_json:
        print(outcome.model_dump_json(exclude_none=True), flush=True)
        return
    if outcome.status in ("refused", "failed"):
        reason = outcome.reason
        print(f"{outcome.input}: {outcome.status.upper()} {reason.code if reason else ''}: {reason.message if reason else ''}",
              flush=True)
        return
    if outcome.status == "duplicate":
        print(f"{outcome.input}: duplicate of {outcome.dossier_id}{_what_is_archived(outcome)} -> {outcome.manifest}", flush=True)
        return
    cached = f", cached: {'+'.join(outcome.cached_steps)}" if outcome.cached_steps else ""
    print(f"{outcome.input}: {outcome.status} {outcome.dossier_id} ({outcome.pages} pages, "
          f"{', '.join(outcome.documents)}; {outcome.duration_s:.1f} s{cached}) -> {outcome.manifest}", flush=True)


def _what_is_archived(outcome: Outcome) -> str:
    """`` (passed, 5 pages: a, b)`` from what the duplicate's outcome says of the archived dossier; only what is known
    (an archive whose manifest could not be read says nothing more than its id)."""
    parts = [part for part in (outcome.archived_status, None if outcome.pages is None else f"{outcome.pages} pages") if part]
    said = ", ".join(parts) + (": " if parts and outcome.documents else "") + ", ".join(outcome.documents)
    return f" ({said})" if said else ""


def _progress_to_stderr() -> None:
    """Page-level progress of long dossiers: Prefect's console handler prints it on stderr."""
    logging.getLogger("sohoa").setLevel(logging.INFO)


def _prefect_defaults() -> None:
    for name, value in _PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
LEAVE_AFTER_S = 2.0  # after a Ctrl-C or SIGTERM: time for Prefect to mark the run Crashed, then the process leaves
SERVER_STOP_S = 1.0  # then the embedded server's graceful shutdown, before it is killed


class _Run:
    """One ``sohoa run``: its progress lines, its embedded server, and what a Ctrl-C or SIGTERM does to it.

    Why: by default a Ctrl-C raises KeyboardInterrupt wherever the main thread is; Prefect then marks the run
    Crashed and Python waits at exit for the OCR threads (minutes), and SIGTERM ended the process without a word.
    Here a thread learns of the first signal at once (a wakeup fd, whichever Python handler is set: Prefect puts
    its own SIGTERM handler in place while a flow runs), quiets the console and gives the main thread
    LEAVE_AFTER_S to get the interrupt to ``cmd_run``; then, or as soon as it does, the process leaves: one line
    on stderr (what finished, how to resume), the server stopped last, exit 130 (SIGINT or SIGTERM alike)."""

    def __init__(self, args: argparse.Namespace):
        self.quiet = args.quiet
        self.server: Any = None
        self.signum: int | None = None
        self.decided = 0  # inputs refused or found archived before any flow ran
        self.running: dict[str, Any] = {}  # input -> its Admission (None if not admitted), while its flow runs
        self.work_url: str | None = None
        self._raised = False
        self._leaving = threading.Lock()

    def say(self, line: str) -> None:
        """What the command is doing, on stderr, as it starts doing it (not with --quiet)."""
        if not self.quiet:
            print(f"sohoa: {line}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def catching_signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM handled as above within the block; the handlers before it are back after it."""
        before = {signum: signal.signal(signum, self._on_signal) for signum in STOP_SIGNALS}
        read, write = os.pipe()
        os.set_blocking(write, False)
        woken = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(read,), name="sohoa-signals", daemon=True).start()
        try:
            yield
        finally:
            signal.set_wakeup_fd(woken)
            os.close(write)  # the watch reads the end of the pipe and returns
            for signum, handler in before.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        """In the main thread: the interrupt, once (a second Ctrl-C must not break the way out)."""
        if not self._raised:
            self._raised = True
            self.signum = self.signum or signum
            raise KeyboardInterrupt

    def _watch(self, wakeup: int) -> None:
        while (said := os.read(wakeup, 1)) and said[0] not in STOP_SIGNALS:
            pass  # another signal with a Python handler (Prefect's SIGALRM timeouts)
        os.close(wakeup)
        if said:
            self.signum = self.signum or said[0]
            _quiet_console()
            time.sleep(LEAVE_AFTER_S)
            self.leave()

    def start_server(self) -> None:
        """The embedded Prefect server, once, unless one is configured: it boots while the other inputs are checked."""
        from sohoa.orchestration.embedded import EmbeddedServer, configured_api_url

        if self.server is None and not configured_api_url():
            self.say("starting the local Prefect server")
            self.server = EmbeddedServer().start()

    def stop_server(self, timeout: float) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop(timeout)

    def leave(self) -> NoReturn:
        """Say what was interrupted, stop the server, and exit now: the OCR threads hold nothing that needs
        closing (every store write is atomic, every finished step is already persisted)."""
        self._leaving.acquire()  # once: the deadline and the main thread may both come here
        print(f"sohoa: interrupted: {self.summary()}", file=sys.stderr, flush=True)
        self.stop_server(SERVER_STOP_S)
        sys.stdout.flush()
        os._exit(ExitCode.interrupted)  # for SIGTERM too: one code for "stopped, run again to resume"

    def summary(self) -> str:
        decided = f"; {self.decided} input(s) decided before (refused or already archived)" if self.decided else ""
        if not self.running:
            return f"no dossier was being processed{decided}"
        done = _said_finished(_finished_steps(self.running, self.work_url))
        return (f"{len(self.running)} dossier(s) stopped{decided}; finished steps are kept"
                f"{f' ({done})' if done else ''}: run the same command again to resume from them")


def _said_finished(finished: dict[str, list[str]], names_up_to: int = 3) -> str:
    """``a.pdf: capture+ocr; b.pdf: no step`` for a few inputs; for more, how many got how far (a line stays a line)."""
    if len(finished) <= names_up_to:
        return "; ".join(f"{Path(item).name}: {'+'.join(steps) or 'no step'}" for item, steps in finished.items())
    reached: dict[str, int] = {}
    for steps in finished.values():
        last = f"up to {steps[-1]}" if steps else "no step"
        reached[last] = reached.get(last, 0) + 1
    return ", ".join(f"{count} {last}" for last, count in reached.items())


def _quiet_console() -> None:
    """Nothing more on the terminal from Prefect or the steps (their crash reports of the interrupt are not
    news): the interrupt's own line is the last one."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (sys.stderr, sys.stdout):
            handler.setLevel(logging.CRITICAL + 1)


def _finished_steps(running: dict[str, Any], work_url: str | None, timeout: float = 0.5) -> dict[str, list[str]]:
    """The steps each input has persisted in the work store, looked up for at most ``timeout`` s in all (a store that
    does not answer leaves the detail out)."""
    found: dict[str, list[str]] = {}

    def look() -> None:
        from sohoa.services.results import WorkStoreCache
        from sohoa.storage import open_store

        cache = WorkStoreCache(open_store(work_url))
        for item, admission in running.items():
            steps = admission.steps.items() if admission else ()  # not admitted: the archive could not be asked
            found[item] = [step for step, planned in steps if cache.has(planned.key)]

    if work_url:
        looking = threading.Thread(target=look, daemon=True)
        looking.start()
        looking.join(timeout)
    return dict(found) if len(found) == len(running) else {}


def cmd_run(args: argparse.Namespace) -> int:
    run = _Run(args)
    with run.catching_signals():
        run.say(f"checking {len(args.inputs)} input(s)")
        try:
            outcomes = _run_inputs(args, run)
        except BaseException as exc:
            if run.signum is None and not isinstance(exc, KeyboardInterrupt):
                raise
            run.leave()  # whatever the signal became on its way up (Prefect's TerminationSignal, a crashed run)
    code = ExitCode.ok
    for item in args.inputs:
        outcome = outcomes[item]
        if outcome.status == "refused":
            code = max(code, ExitCode.refused)
        elif outcome.status == "failed":
            code = max(code, ExitCode.failed)
        _print(outcome, args.json)
    return code


def _run_inputs(args: argparse.Namespace, run: _Run) -> dict[str, Outcome]:
    _prefect_defaults()
    if args.quiet:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    else:
        _progress_to_stderr()
    if args.work:
        os.environ["SOHOA_WORK"] = args.work
    from sohoa.services.plan import STEPS

    bad = [step for step in args.refresh if step not in STEPS]
    if bad:
        raise UsageError(f"unknown step {bad[0]!r}; steps are {', '.join(STEPS)}")
    settings = _settings(archive=args.archive)
    run.work_url = settings.work
    _ready(settings.archive, settings.work)
    return _process(list(dict.fromkeys(args.inputs)), args, settings, run)


def _process(items: list[str], args: argparse.Namespace, settings: Any, run: _Run) -> dict[str, Outcome]:
    """Refusals and duplicates first, without Prefect (started at the first input to process, so that an all-refused
    batch never starts it); then the rest in flows.

    Two inputs with the same content are not processed side by side: the second waits for the
    first, then comes back as its duplicate.
    """
    from sohoa.services.runner import first_copies

    outcomes: dict[str, Outcome] = {}
    admitted: dict[str, tuple[Outcome | None, Any]] = {}
    for item in items:
        admitted[item] = _admitted(item, settings, args)
        if admitted[item][0] is None:
            run.start_server()
    left = [item for item in items if admitted[item][0] is None]
    decided = {item: outcome for item, (outcome, _admission) in admitted.items() if outcome is not None}
    outcomes |= decided
    run.decided += len(decided)
    copies = first_copies([_sha256(admitted[item][1]) for item in left])
    todo = [item for item, first in zip(left, copies) if first is None]
    later = [item for item, first in zip(left, copies) if first is not None]
    if todo:
        run.running = {item: admitted[item][1] for item in todo}
        outcomes |= _run_flows(todo, args, settings, run)
        run.running = {}
    if later:
        outcomes |= _process(later, args, settings, run)
    return outcomes


def _sha256(admission: Any) -> str | None:
    return admission.info.sha256 if admission is not None else None


def _admitted(item: str, settings: Any, args: argparse.Namespace) -> tuple[Outcome | None, Any]:
    """A refusal or a duplicate decided before any flow runs (no Prefect needed), or None: to process; and the
    input's Admission when it was admitted (None when the store could not be asked: the flow will say why)."""
    from sohoa.kernel.errors import InputRefused
    from sohoa.services.plan import admit
    from sohoa.services.quarantine import refuse_or_fail, safe_name
    from sohoa.steps.capture import check_name
    from sohoa.storage import open_store

    started = time.perf_counter()
    store = open_store(settings.archive)
    admission = None
    try:
        check_name(Path(item))  # a name that cannot even travel as a flow parameter (not UTF-8)
        admission = admit(Path(item), settings, args.procedure, store, refresh=bool(args.refresh))
        return admission.duplicate(item, store, round(time.perf_counter() - started, 3)), admission
    except InputRefused as refusal:
        return refuse_or_fail(store, Path(item), refusal, sha256=_sha256(admission), max_copy_bytes=settings.max_input_bytes,
                              duration_s=round(time.perf_counter() - started, 3)), admission  # failed if not kept
    except Exception as exc:  # the store went away: the flow will report it with the dossier
        logging.getLogger("sohoa").debug("admission of %s: %s", safe_name(item), exc)
        return None, admission


def _run_flows(items: list[str], args: argparse.Namespace, settings: Any, run: _Run) -> dict[str, Outcome]:
    """Process the admitted inputs: one flow run for one input, one batch run (dossiers in parallel) for several."""
    from sohoa.services.quarantine import failed

    run.start_server()  # started by _process already, unless the archive could not be asked
    server = run.server
    try:
        from prefect.task_runners import ThreadPoolTaskRunner

        from sohoa.orchestration.process import process_batch, process_dossier
        from sohoa.orchestration.result_storage import result_storage_for

        _one_line_errors()
        try:
            if server:
                server.wait(float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))
            result_storage_for(settings.work)  # once per process, before the first dossier
        except Exception as exc:
            message = f"cannot reach Prefect or the work store: {(str(exc).splitlines() or [type(exc).__name__])[0]}"
            print(f"sohoa: {message}", file=sys.stderr)
            return {item: failed(item, exc, message) for item in items}
        run.say(f"processing {len(items)} dossier(s)")
        params = dict(archive=settings.archive, procedure=args.procedure, refresh=getattr(args, "refresh", None) or None)
        with _without_heartbeats(server is not None):
            try:
                if len(items) == 1:
                    return {items[0]: process_dossier(source=items[0], **params)}
                batch = process_batch.with_options(task_runner=ThreadPoolTaskRunner(max_workers=settings.jobs + 1))
                return dict(zip(items, batch(sources=items, **params)))
            except Exception as exc:  # one dossier's failure (or the orchestrator's) is reported, never a traceback
                if run.signum is not None:  # Prefect's own reaction to the signal (TerminationSignal and the like)
                    raise KeyboardInterrupt from None
                return {item: failed(item, exc) for item in items}
    except BaseException:
        if run.signum is None:  # interrupted, the run leaves and stops the server last
            run.stop_server(SERVER_STOP_S)
        raise
    # on success the server stops at exit, after Prefect has sent its last logs and events (atexit runs LIFO)


class _NoTraceback(logging.Filter):
    """On the terminal, a step that failed for an operational reason (storage, engine, disk) is the one
    line its error says; Prefect's API handler, which runs first, keeps the traceback for the UI."""

    def filter(self, record: logging.LogRecord) -> bool:
        from sohoa.kernel.errors import OcrError
        from sohoa.storage import StorageError

        if record.exc_info and isinstance(record.exc_info[1], (StorageError, OcrError, OSError)):
            record.exc_info = record.exc_text = None
        return True


def _one_line_errors() -> None:
    """Once Prefect has configured logging: its console handler (on the root logger) prints no traceback
    for operational failures (a programming error still shows one)."""
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler" and not any(isinstance(f, _NoTraceback) for f in handler.filters):
            handler.addFilter(_NoTraceback())


@contextlib.contextmanager
def _without_heartbeats(embedded: bool) -> Iterator[None]:
    """On the CLI's own server, flow-run heartbeats guard nothing (the server dies with this process)
    and each flow run waits up to a second for the heartbeat thread at its end: turn them off."""
    if not embedded:  # a real server: heartbeats detect crashed runs
        yield
        return
    import prefect.settings as prefect_settings

    with prefect_settings.temporary_settings(updates={prefect_settings.PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def _stores(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Settings and the archive and work stores of a command, prepared (see ``_ready``)."""
    settings = _settings(archive=args.archive, work=getattr(args, "work", None))
    return settings, *_ready(settings.archive, settings.work)


def _settings(**given: str | None) -> Any:
    """Settings from the environment and the options given; a bad value is a ConfigurationError (exit 2)."""
    from sohoa.kernel.settings import Settings

    try:
        return Settings(**{name: value for name, value in given.items() if value})
    except ValidationError as exc:
        raise ConfigurationError(_validation_line(exc)) from None
    except ValueError as exc:  # pydantic-settings' SettingsError: a SOHOA_* variable that cannot be parsed
        raise ConfigurationError((str(exc).splitlines() or [type(exc).__name__])[0]) from None


def _opened(url: str) -> Any:
    """The store at ``url``, not contacted: a URL or SOHOA_S3_* setting that cannot be used as written
    is the command line's ConfigurationError (exit 2)."""
    from sohoa.storage import StorageError, open_store

    try:
        return open_store(url)
    except ValidationError as exc:
        raise ConfigurationError(_validation_line(exc)) from None
    except StorageError as exc:
        raise ConfigurationError(exc.message) from None


def _ready(*urls: str) -> list[Any]:
    """The stores, all opened before any is contacted (configuration errors first, exit 2), then checked:
    a store that cannot be reached or used raises its StorageError (exit 4, whatever the command)."""
    stores = [_opened(url) for url in urls]
    for store in stores:
        store.ensure_ready()
    return stores


def _validation_line(exc: ValidationError) -> str:
    """A pydantic error in one line: which setting and what is wrong with it (never its value)."""
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return exc.title
    where = ".".join(str(part) for part in errors[0]["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{exc.title} {where}: {errors[0]['msg']}{more}".replace(" : ", ": ")


def cmd_eval(args: argparse.Namespace) -> int:
    from sohoa.services import evaluate

    requirements = _requirements(args.require, EVAL_METRICS)
    if not args.folder.is_dir():
        raise UsageError(f"{args.folder} is not a folder")
    settings, archive, work = _stores(args)
    report = evaluate.evaluate(args.folder, settings, archive, work, progress=lambda line: print(line, file=sys.stderr))
    print(report.model_dump_json(indent=2) if args.json else evaluate.render(report))
    failures = evaluate.check_requirements(report, requirements)
    for failure in failures:
        print(f"sohoa: {failure}", file=sys.stderr)
    return ExitCode.below_target if failures else ExitCode.ok


def _requirements(given: list[str], metrics: Sequence[str]) -> dict[str, float]:
    """``--require METRIC=VALUE`` options by metric; a UsageError before anything is evaluated."""
    try:
        requirements = {name: float(value) for name, _, value in (r.partition("=") for r in given)}
    except ValueError:
        raise UsageError("--require takes METRIC=NUMBER") from None
    unknown = [name for name in requirements if name not in metrics]
    if unknown:
        raise UsageError(f"unknown metric {unknown[0]!r}; metrics are {', '.join(metrics)}")
    return requirements


def cmd_train(args: argparse.Namespace) -> int:
    """Too few reviewed documents is TooLittleData (exit 5, nothing written)."""
    from sohoa.services import training

    settings, archive, _ = _stores(args)
    ref, model, found = training.train(archive, settings, progress=lambda line: print(line, file=sys.stderr))
    summary = {"model": archive.url_for(ref.key), "version": ref.version, **model.summary.model_dump()}
    if found.skipped_types:
        summary["skipped_types"] = found.skipped_types
    print(json.dumps(summary, ensure_ascii=False) if args.json else
          f"classifier v{ref.version}: {model.summary.pages} pages of {model.summary.dossiers} dossiers, "
          f"{len(model.classes)} types, accuracy on unseen dossiers {model.summary.cv_accuracy:.1%} -> {archive.url_for(ref.key)}")
    return ExitCode.ok


def cmd_reviews(args: argparse.Namespace) -> int:
    from sohoa.services import review_queue

    _, archive, _ = _stores(args)
    entries = review_queue.pending(archive)
    for entry in entries:
        if args.json:
            print(json.dumps({**entry.model_dump(), "state": entry.state()}, ensure_ascii=False))
            continue
        print(f"{entry.dossier_id}  {entry.state()}  since {entry.queued_at}  {entry.source}")
        for check in entry.failed_checks:
            print(f"    {check}")
    if not args.json:
        print(f"{len(entries)} dossier(s) waiting for review; decide with: sohoa review DOSSIER_ID --approve | --reject REASON"
              " [--type N=TYPE]", file=sys.stderr)
    return ExitCode.ok


def cmd_review(args: argparse.Namespace) -> int:
    """Decide on an archived dossier. Approving or rejecting a queued dossier runs it again with the
    decision (the runner, steps cached): the documents are verified again as the operator set them, as
    when the review is answered in the Prefect UI. Other decisions are recorded on the manifest as it stands."""
    from sohoa.domain.catalog import catalog, taxonomy
    from sohoa.services import review, review_queue

    try:
        types = {int(number): code for number, _, code in (t.partition("=") for t in args.type)}
    except ValueError:
        raise UsageError("--type takes N=TYPE, N the document's number") from None
    settings, archive, _ = _stores(args)
    prefix, before = review.load(archive, args.dossier)  # ReviewError (exit 2): unknown dossier, type, document
    codes = taxonomy(settings.taxonomy).codes()
    queued = review_queue.get(archive, before.dossier_id)
    if (args.approve or args.reject) and queued:
        decision = review.whole_decision(before, by=args.by, codes=codes, types=types, reject=args.reject,
                                         procedure=args.procedure, procedures=set(catalog(settings.catalog).procedures))
        return _review_by_runner(queued, before, decision, args, settings, archive)
    after = review.decide(before, by=args.by, codes=codes, types=types,
                          approve=args.approve, reject=args.reject, procedure=args.procedure)
    key = review.record(archive, prefix, before, after)
    if after.status != "needs_review":
        review_queue.remove(archive, after.dossier_id)
    _print_decision(after, archive.url_for(key), args.json)
    return ExitCode.ok


def _review_by_runner(queued: Any, manifest: Any, decision: Any, args: argparse.Namespace, settings: Any,
                    archive: Any) -> int:
    """Run the dossier through the runner with the decision, as a resumed review form does, but without
    Prefect (its steps come back from the work store's results): from its input if still at hand, else
    from the archived original (same bytes, so the same cached steps)."""
    import tempfile

    from sohoa.services import review, runner
    from sohoa.services.quarantine import failed
    from sohoa.services.reprocess import original

    context = runner.RunContext(settings=settings, procedure=args.procedure or queued.procedure, decision=decision)
    with tempfile.TemporaryDirectory(prefix="sohoa-review-") as tmp:
        source = queued.source if Path(queued.source).exists() else str(original(archive, manifest, Path(tmp)))
        try:
            outcome = runner.run_dossier(source, context)
        except SohoaError:
            raise
        except Exception as exc:  # quarantined by the runner; one line here
            outcome = failed(source, exc)
    if outcome.status == "failed":
        print(f"sohoa: {outcome.reason.message if outcome.reason else 'the decision could not be applied'}", file=sys.stderr)
        return ExitCode.failed
    prefix, after = review.load(archive, queued.dossier_id)
    _print_decision(after, archive.url_for(prefix + "manifest.json"), args.json)
    return ExitCode.ok


def _print_decision(after: Any, manifest_url: str, as_json: bool) -> None:
    decision = after.decisions[-1]
    if as_json:
        print(json.dumps({"dossier_id": after.dossier_id, "revision": after.revision, "status": after.status,
                          "decision": decision.model_dump(), "manifest": manifest_url}, ensure_ascii=False))
        return
    reason = f": {decision.reason}" if decision.reason else ""
    changes = f", {len(decision.changes)} change(s)" if decision.changes else ""
    print(f"{after.dossier_id}: {after.status}, revision {after.revision} ({decision.action} by {decision.by}{reason}"
          f"{changes}) -> {manifest_url}")


def cmd_watch(args: argparse.Namespace) -> int:
    """Watch an inbox from this process (a kill loses nothing: the next start lists again)."""
    from sohoa.services import inbox

    [store] = _ready(args.inbox)
    if args.status:
        return _watch_status(store, args.poll)
    from sohoa.orchestration.embedded import configured_api_url

    if not configured_api_url():
        raise UsageError("watch starts runs of the process-drop deployment: set PREFECT_API_URL to the Prefect server")
    import logging

    from sohoa.orchestration.inbox import submit

    log = logging.getLogger("sohoa.watch")  # its own handler: importing Prefect configures logging its way
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    log.info("watching %s every %.0f s", store.url, args.poll)
    heartbeat = inbox.watch(store, submit(args.inbox, args.archive, args.procedure), poll_s=args.poll,
                            max_scans=args.scans, log=log)
    print(heartbeat.model_dump_json())
    return ExitCode.ok


def _watch_status(store: Any, poll_s: float) -> int:
    """The watcher's health and the inbox's state as JSON; ExitCode.unhealthy (1, what a health check
    expects) when the last scan is older than three poll intervals or there is none."""
    from datetime import UTC, datetime

    from sohoa.services import inbox

    state = inbox.status(store)
    print(json.dumps(state, ensure_ascii=False))
    beat = state["heartbeat"]
    age = (datetime.now(UTC) - datetime.fromisoformat(beat["at"])).total_seconds() if beat and beat["at"] else None
    if age is not None and age <= 3 * poll_s:
        return ExitCode.ok
    print(f"sohoa: unhealthy: {'no scan yet' if age is None else f'the last scan is {age:.0f} s old'} "
          f"(more than 3 x {poll_s:g} s)", file=sys.stderr)
    return ExitCode.unhealthy


def cmd_check(args: argparse.Namespace) -> int:
    from sohoa.services import check

    _, archive, _ = _stores(args)
    result = check.check(archive, hashes=not args.quick)
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        for problem in result.problems:
            print(f"{problem.kind.upper():18} {problem.key}  {problem.detail}")
        print(f"{result.dossiers} dossier(s), {result.files_checked} file(s), {result.bytes_checked} bytes checked: "
              f"{len(result.problems)} problem(s)", file=sys.stderr)
    return ExitCode.ok if result.ok else ExitCode.integrity


def cmd_report(args: argparse.Namespace) -> int:
    from sohoa.services import report

    _, archive, _ = _stores(args)
    inbox = _opened(args.inbox) if args.inbox else None  # only read: not created
    rows = report.build(archive, inbox, args.period, args.since, args.until)
    saved = report.save(archive, rows, args.period) if args.save else None
    if args.format == "csv":
        print(report.to_csv(rows), end="")
    elif args.format == "json":
        print(json.dumps([r.model_dump() for r in rows], ensure_ascii=False, indent=2))
    else:
        print(_table([*rows, report.totals(rows)]))
    if saved:
        print(f"saved {archive.url_for(saved[0])} and {archive.url_for(saved[1])}", file=sys.stderr)
    return ExitCode.ok


def cmd_find(args: argparse.Namespace) -> int:
    """Look up what the archive already holds, so the counter does not ask for the same paper twice.
    The index is a cache of the manifests: built on first use, rebuilt with --rebuild."""
    import sqlite3

    from sohoa.domain import index as reuse_index

    problem = _find_problem(args)
    if problem:
        raise UsageError(problem)
    settings, archive, _ = _stores(args)
    try:
        with reuse_index.index_for(settings, archive, rebuild_first=args.rebuild) as index:
            hits = index.find(cccd=args.cccd, dossier_code=args.dossier, doc_type=args.type, procedure=args.procedure,
                              since=args.since, until=args.until)
    except (OSError, sqlite3.Error) as exc:  # the index file, a cache beside the archive: the lookup failed (exit 4)
        raise SohoaError(f"reuse index: {exc}") from None
    for line in (h.model_dump_json() for h in hits) if args.json else _found_lines(hits, archive):
        print(line)
    dossiers = len({h.manifest_key for h in hits})
    print(f"{len(hits)} document(s) in {dossiers} dossier(s)" if hits else "no archived document matches", file=sys.stderr)
    return ExitCode.ok


def _find_problem(args: argparse.Namespace) -> str | None:
    """Why the criteria cannot be looked up (a mistyped number must not just find nothing), or None."""
    from datetime import date

    from sohoa.domain import identifiers
    from sohoa.domain import index as reuse_index
    from sohoa.domain.catalog import taxonomy

    if not any((args.cccd, args.dossier, args.type, args.procedure, args.since, args.until)):
        return "find needs at least one of --cccd, --dossier, --type, --procedure, --since, --until"
    if args.cccd is not None and (problem := reuse_index.person_id_problem(args.cccd)):
        return f"--cccd {args.cccd!r} is not an ID number: {problem}"
    if args.procedure is not None and not identifiers.PROCEDURE_CODE.match(args.procedure):
        return f"--procedure {args.procedure!r} is not a procedure code (D.DDDDDD, e.g. 1.001193)"
    if args.type is not None and args.type not in taxonomy().codes():
        return f"--type {args.type!r} is not a document type; types are {', '.join(sorted(taxonomy().codes()))}"
    for option, value in (("--since", args.since), ("--until", args.until)):
        try:
            if value is not None:
                date.fromisoformat(value)
        except ValueError:
            return f"{option} {value!r} is not a date (YYYY-MM-DD)"
    return None


def _found_lines(hits: list[Any], archive: Any) -> Iterator[str]:
    """One line per dossier, then one per document with where its PDF is."""
    previous = None
    for hit in hits:
        if hit.manifest_key != previous:
            previous = hit.manifest_key
            yield (f"{hit.dossier_id}  {hit.procedure or '-'}  {hit.status}  received {hit.received_at[:10]}  "
                   f"revision {hit.revision}  {archive.url_for(hit.manifest_key)}")
        numbers = f"  cccd {', '.join(hit.document_cccd)}" if hit.document_cccd else ""
        where = archive.url_for(hit.file_key) if hit.file_key else "(no PDF of its own)"
        yield f"  {hit.document:>2}. {hit.type}  pages {', '.join(map(str, hit.pages))}{numbers}  {where}"


def _table(rows: list[Any]) -> str:
    names = ["agency", "station", "procedure", "period", "received", "archived", "passed", "needs_review", "rejected",
             "pages", "median_drop_to_archive_s", "duplicates", "refused", "failed"]
    heads = [n.replace("median_drop_to_archive_s", "median_s") for n in names]
    cells = [[("" if getattr(r, n) is None else str(getattr(r, n))) for n in names] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths))  # noqa: E731
    return "\n".join([line(heads), *(line(c) for c in cells)])


def cmd_schema(args: argparse.Namespace) -> int:
    from sohoa.kernel.models import Manifest

    print(json.dumps(Manifest.model_json_schema(by_alias=True), indent=2, ensure_ascii=False))
    return ExitCode.ok


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Expected errors are mapped here, once, for every command: one line
    ``sohoa: <message>`` on stderr and the error's own exit code, never a traceback (a programming
    error still shows one)."""
    args = _parser().parse_args(argv)
    handlers = {"run": cmd_run, "schema": cmd_schema, "eval": cmd_eval, "train": cmd_train,
                "review": cmd_review, "reviews": cmd_reviews, "watch": cmd_watch, "report": cmd_report,
                "check": cmd_check, "find": cmd_find}
    try:
        with _reader_warnings() if args.command != "run" else contextlib.nullcontext():
            return int(handlers[args.command](args))
    except SohoaError as exc:  # StorageError, UsageError, ConfigurationError, OcrError, ...
        return _failed(exc.message, exc.exit_code)
    except ValidationError as exc:  # settings read after the command's own checks
        return _failed(f"configuration error: {_validation_line(exc)}", ExitCode.usage)
    except KeyboardInterrupt:
        return _failed("interrupted", ExitCode.interrupted)


@contextlib.contextmanager
def _reader_warnings() -> Iterator[None]:
    """Each archived file that a reader of the archive skips (report, train, find's index, review) is logged
    by ``sohoa.reuse`` as it is skipped (index.Unreadable): here that becomes one ``sohoa: skipped unreadable
    KEY: reason`` line on stderr, printed once, even when the command then fails (train: too little data).
    Not for ``run``, whose logs go to Prefect's handlers and the run's log."""
    log = logging.getLogger("sohoa.reuse")
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("sohoa: %(message)s"))
    log.addHandler(handler)
    log.propagate = False  # else Python's last-resort handler prints it again, without the prefix
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.propagate = True


def _failed(message: str, code: ExitCode) -> int:
    print(f"sohoa: {message}", file=sys.stderr, flush=True)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
