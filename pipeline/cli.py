"""``sohoa`` command line.

``sohoa run`` processes each INPUT as one dossier through the Prefect flow. With no
``PREFECT_API_URL`` set, Prefect runs on its embedded (ephemeral) API: nothing to start.
One line per dossier is printed (JSON with ``--json``); a bad input is reported on its own
line and never stops the others. Prefect is imported only when a flow has to run, so the
rest of the package stays importable without it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import ExitCode
from pipeline.models import Outcome

_PREFECT_DEFAULTS = {
    # the first flow with a fresh PREFECT_HOME can take ~20 s to start the embedded server on 2 cores
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "sohoa",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sohoa", description="Digitize scanned dossiers into a verified archive.")
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
    synth = commands.add_parser("synth", help="write a synthetic labelled dossier (for demos and tests)")
    synth.add_argument("out", type=Path)
    synth.add_argument("--procedure", default="1.001193")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--format", default="pdf", choices=["pdf", "tiff", "png-dir", "jpeg-dir", "text-pdf"])
    return parser


def _print(outcome: Outcome, as_json: bool) -> None:
    if as_json:
        print(outcome.model_dump_json(exclude_none=True), flush=True)
        return
    if outcome.status in ("refused", "failed"):
        reason = outcome.reason
        print(f"{outcome.input}: {outcome.status.upper()} {reason.code if reason else ''}: {reason.message if reason else ''}",
              flush=True)
        return
    cached = f", cached: {'+'.join(outcome.cached_steps)}" if outcome.cached_steps else ""
    print(f"{outcome.input}: {outcome.status} {outcome.dossier_id} ({outcome.pages} pages, "
          f"{', '.join(outcome.documents)}; {outcome.duration_s:.1f} s{cached}) -> {outcome.manifest}", flush=True)


def _progress_to_stderr() -> None:
    """Page-level progress of long dossiers: Prefect's console handler prints it on stderr."""
    logging.getLogger("sohoa").setLevel(logging.INFO)


def cmd_run(args: argparse.Namespace) -> int:
    for name, value in _PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if args.quiet:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    else:
        _progress_to_stderr()
    if args.work:
        os.environ["SOHOA_WORK"] = args.work
    from pydantic import ValidationError

    from pipeline.plan import STEPS
    from pipeline.settings import Settings
    from storage import StorageError, open_store

    bad = [step for step in args.refresh if step not in STEPS]
    if bad:
        print(f"sohoa: unknown step {bad[0]!r}; steps are {', '.join(STEPS)}", file=sys.stderr)
        return ExitCode.usage
    try:
        settings = Settings(**({"archive": args.archive} if args.archive else {}))
        for url in (settings.archive, settings.work):
            open_store(url).ensure_ready()
    except (ValidationError, StorageError, ValueError) as exc:
        print(f"sohoa: configuration error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return ExitCode.usage
    try:
        outcomes = _process(list(dict.fromkeys(args.inputs)), args, settings)
    except KeyboardInterrupt:
        return ExitCode.interrupted
    code = ExitCode.ok
    for item in args.inputs:
        outcome = outcomes[item]
        if outcome.status == "refused":
            code = max(code, ExitCode.refused)
        elif outcome.status == "failed":
            code = max(code, ExitCode.failed)
        _print(outcome, args.json)
    return code


def _process(items: list[str], args: argparse.Namespace, settings: Any) -> dict[str, Outcome]:
    """Refusals and duplicates first, without Prefect; then the rest in flows.

    Two inputs with the same content are not processed side by side: the second waits for the
    first, then comes back as its duplicate.
    """
    outcomes: dict[str, Outcome] = {}
    todo: list[str] = []
    later: list[str] = []
    seen: set[str] = set()
    for item in items:
        outcome, sha256 = _admitted(item, settings, args)
        if outcome is not None:
            outcomes[item] = outcome
        elif sha256 in seen:
            later.append(item)
        else:
            seen.add(sha256 or item)
            todo.append(item)
    if todo:
        outcomes |= _run_flows(todo, args, settings)
    if later:
        outcomes |= _process(later, args, settings)
    return outcomes


def _admitted(item: str, settings: Any, args: argparse.Namespace) -> tuple[Outcome | None, str | None]:
    """A refusal or a duplicate decided before any flow runs (no Prefect needed); None: to process."""
    import time

    from pipeline.capture import check_name
    from pipeline.errors import InputRefused
    from pipeline.plan import admit
    from pipeline.quarantine import refuse, safe_name
    from storage import open_store

    started = time.perf_counter()
    store = open_store(settings.archive)
    sha256 = None
    try:
        check_name(Path(item))  # a name that cannot even travel as a flow parameter (not UTF-8)
        admission = admit(Path(item), settings, args.procedure, store, refresh=bool(args.refresh))
        sha256 = admission.info.sha256
        return admission.duplicate(item, store, round(time.perf_counter() - started, 3)), sha256
    except InputRefused as refusal:
        return refuse(store, Path(item), refusal, sha256=sha256), sha256
    except Exception as exc:  # the store went away: the flow will report it with the dossier
        logging.getLogger("sohoa").debug("admission of %s: %s", safe_name(item), exc)
        return None, sha256


def _run_flows(items: list[str], args: argparse.Namespace, settings: Any) -> dict[str, Outcome]:
    """Process the admitted inputs: one flow run for one input, one batch run (dossiers in parallel) for several."""
    from flows.embedded import EmbeddedServer, configured_api_url
    from pipeline.quarantine import failed

    server = None if configured_api_url() else EmbeddedServer().start()  # boots while Prefect is imported
    try:
        from flows.process import process_batch, process_dossier
        from flows.result_storage import result_storage_for
        from prefect.task_runners import ThreadPoolTaskRunner

        try:
            if server:
                server.wait(float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))
            result_storage_for(settings.work)  # once per process, before the first dossier
        except Exception as exc:
            message = f"cannot reach Prefect or the work store: {str(exc).splitlines()[0]}"
            print(f"sohoa: {message}", file=sys.stderr)
            return {item: failed(item, exc, message) for item in items}
        params = dict(archive=settings.archive, procedure=args.procedure, refresh=args.refresh or None)
        with _without_heartbeats(server is not None):
            try:
                if len(items) == 1:
                    return {items[0]: process_dossier(source=items[0], **params)}
                batch = process_batch.with_options(task_runner=ThreadPoolTaskRunner(max_workers=settings.jobs + 1))
                return dict(zip(items, batch(sources=items, **params)))
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # one dossier's failure (or the orchestrator's) is reported, never a traceback
                return {item: failed(item, exc) for item in items}
    except BaseException:
        if server:
            server.stop()
        raise
    # on success the server stops at exit, after Prefect has sent its last logs and events (atexit runs LIFO)


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


def cmd_synth(args: argparse.Namespace) -> int:
    from pipeline import synth

    truth = synth.make_dossier(args.out, procedure=args.procedure, seed=args.seed, fmt=args.format)
    print(json.dumps({"files": truth.files, "dossier_code": truth.dossier_code, "pages": len(truth.pages)}))
    return ExitCode.ok


def cmd_schema(args: argparse.Namespace) -> int:
    from pipeline.models import Manifest

    print(json.dumps(Manifest.model_json_schema(by_alias=True), indent=2, ensure_ascii=False))
    return ExitCode.ok


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"run": cmd_run, "synth": cmd_synth, "schema": cmd_schema}
    return int(handlers[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
