"""Benchmark: the whole service under load, from inbox drops to archives, with its memory over time.

    .venv/bin/python bench/load.py [--dossiers 200] [--pages-min 5] [--stations 2] [--limit 4] [--poll 2]
                                   [--timeout S] [--workdir DIR] [--json-out FILE]

Starts the local stack the way ``scripts/stack`` does (and ``tests/test_inbox.py``'s service test):
an S3 server (ministack from ``.venv-s3``), a Prefect server, the seven deployments, one ``sohoa``
worker on the pool (``--limit`` flow runs at a time, sohoa/orchestration/worker.py) and ``sohoa watch`` on the
inbox bucket. It first generates ``--dossiers`` distinct synthetic dossiers (dev/sohoa_dev/synth.py: the
three procedures, 300 dpi scanned PDFs, each at least ``--pages-min`` pages, every dossier code
different; not timed), then drops them all into the inbox across ``--stations`` stations and
waits until every drop has been archived and moved to ``_sohoa/done/`` (or quarantined, which
fails the benchmark). Meanwhile it samples, every second, the resident memory of the worker's,
the Prefect server's, the watcher's and the S3 server's process trees (/proc).

Reports dossiers, pages, the wall time from the first drop to the last archive, pages and dossiers
per minute, drop-to-archive latency, and per component the peak RSS and the RSS at 10%, 50% and
90% of the run (flat memory means no leak across dossiers). Checks, and exits 1 when one fails:
every drop archived; none failed, refused or duplicate; exactly one manifest per dossier code and
no ``~`` sibling prefix; one ledger entry per drop; one ``process-drop`` flow run per drop, none
failed or crashed; the inbox empty.

The default (200 dossiers, 1000 pages) takes about 25 minutes on 2 cores; ``--dossiers 6`` checks
the benchmark itself in about 3.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent
PREFECT = [str(BIN / "prefect"), "--no-prompt"]
PROCEDURES = ("1.001193", "1.000894", "1.001612")
EXTRA_PAGE = "can_cuoc"  # one more ID-card copy when a dossier needs more pages
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SERVER_TUNING = {"PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
                 "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "200"}
FINISHED = {"passed", "needs_review", "rejected"}
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED", "PAUSED"}  # PAUSED: a suspended run waits for a person


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait(predicate, timeout: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# --- generation (not timed) ----------------------------------------------------------------


def _generate(job: tuple[str, str, int, int]) -> tuple[str, str, int]:
    from sohoa_dev import synth

    path, procedure, seed, pages_min = job
    include = list(synth.PROCEDURES[procedure]["default"])
    while True:
        truth = synth.make_dossier(Path(path), procedure=procedure, seed=seed, include=include)
        if len(truth.pages) >= pages_min:
            return path, truth.dossier_code, len(truth.pages)
        include.append(EXTRA_PAGE)


def generate(folder: Path, count: int, pages_min: int) -> list[tuple[Path, str, int]]:
    """``count`` distinct dossiers (distinct bytes and dossier codes): (path, code, pages)."""
    folder.mkdir(parents=True, exist_ok=True)
    made: list[tuple[Path, str, int]] = []
    codes: set[str] = set()
    seed = 5000
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        while len(made) < count:
            jobs = [(str(folder / f"{seed + i:05d}.pdf"), PROCEDURES[(seed + i) % 3], seed + i, pages_min)
                    for i in range(count - len(made))]
            seed += len(jobs)
            for path, code, pages in pool.map(_generate, jobs):
                if code in codes:  # the same code twice would be archived as a `~` sibling: not this benchmark
                    Path(path).unlink()
                    continue
                codes.add(code)
                made.append((Path(path), code, pages))
    return made


# --- memory sampling -----------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    found = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found += _tree(int(child))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return found


def tree_rss(pid: int) -> int:
    total = 0
    for member in _tree(pid):
        try:
            with open(f"/proc/{member}/statm") as statm:
                total += int(statm.read().split()[1]) * PAGE_SIZE
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total


class Sampler(threading.Thread):
    """RSS of each component's process tree, every ``every`` seconds: (monotonic time, bytes)."""

    def __init__(self, pids: dict[str, int], every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pids, self.every = pids, every
        self.samples: dict[str, list[tuple[float, int]]] = {name: [] for name in pids}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            now = time.monotonic()
            for name, pid in self.pids.items():
                self.samples[name].append((now, tree_rss(pid)))
            self.done.wait(self.every)

    def stop(self) -> None:
        self.done.set()
        self.join()

    def summary(self, start: float, end: float) -> dict[str, dict[str, float]]:
        out = {}
        for name, samples in self.samples.items():
            during = [(t, rss) for t, rss in samples if start <= t <= end] or samples
            at = {}
            for fraction in (0.1, 0.5, 0.9):
                target = start + fraction * (end - start)
                at[f"at_{int(fraction * 100)}pct_mib"] = round(min(during, key=lambda s: abs(s[0] - target))[1] / 2**20, 1)
            before = [rss for t, rss in samples if t < start]
            out[name] = {"idle_mib": round(before[-1] / 2**20, 1) if before else None,
                         "peak_mib": round(max(rss for _, rss in during) / 2**20, 1), **at}
        return out


# --- the stack -----------------------------------------------------------------------------


class Stack:
    """ministack, Prefect server, deployments, one sohoa worker, the watcher; logs in ``root/logs``."""

    def __init__(self, root: Path, limit: int, poll: float) -> None:
        self.root, self.limit, self.poll = root, limit, poll
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen] = {}
        s3_port, api_port = free_port(), free_port()
        self.s3_url, self.api = f"http://127.0.0.1:{s3_port}", f"http://127.0.0.1:{api_port}/api"
        self.env = {**os.environ, **SERVER_TUNING,
                    "SOHOA_S3_ENDPOINT": self.s3_url, "SOHOA_S3_ACCESS_KEY": "test", "SOHOA_S3_SECRET_KEY": "test",
                    "SOHOA_S3_REGION": "us-east-1", "SOHOA_ARCHIVE": "s3://archive", "SOHOA_WORK": "s3://work",
                    "SOHOA_INBOX": "s3://inbox", "PREFECT_HOME": str(root / "prefect"), "PREFECT_API_URL": self.api,
                    "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                    "PWD": str(REPO), "XDG_CACHE_HOME": str(root / "cache")}  # prefect.yaml runs flows from $PWD
        for name in ("SOHOA_S3_SECURE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PREFECT_PROFILE"):
            self.env.pop(name, None)

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")
        process = subprocess.Popen(command, env=env or self.env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        self.processes[name] = process
        return process

    def start(self) -> Stack:
        ministack = REPO / ".venv-s3" / "bin" / "ministack"
        if not ministack.exists():
            raise SystemExit(f"{ministack} not found: run scripts/s3-server --install")
        (self.root / "s3").mkdir(exist_ok=True)
        self._spawn("s3", [str(ministack)], {**self.env, "GATEWAY_PORT": self.s3_url.rsplit(":", 1)[1],
                                            "BIND_HOST": "127.0.0.1", "SERVICES": "s3", "S3_PERSIST": "1",
                                            "S3_DATA_DIR": str(self.root / "s3"), "LOG_LEVEL": "WARNING"})
        wait(lambda: http_ok(f"{self.s3_url}/_ministack/health"), 60, "the S3 server")
        self._spawn("server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", self.api.split(":")[2].split("/")[0]])
        wait(lambda: http_ok(f"{self.api}/health"), 180, f"the Prefect server (see {self.logs})")
        for command in (["work-pool", "create", "sohoa", "--type", "sohoa", "--overwrite"], ["deploy", "--all"]):
            done = subprocess.run([*PREFECT, *command], env=self.env, cwd=REPO, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"prefect {' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        self._spawn("worker", self.worker_command())
        wait(self._worker_online, 180, f"the worker to come online (see {self.logs}/worker.log)", every=1)
        self._spawn("watcher", [str(BIN / "sohoa"), "watch", "s3://inbox", "--archive", "s3://archive",
                                "--poll", str(self.poll)])
        return self

    def worker_command(self) -> list[str]:
        return [*PREFECT, "worker", "start", "--pool", "sohoa", "--limit", str(self.limit)]

    def _worker_online(self) -> bool:
        try:
            workers = self.post("/work_pools/sohoa/workers/filter", {})
        except OSError:
            return False
        return any(w.get("status") == "ONLINE" for w in workers)

    def post(self, path: str, body: dict) -> list | dict:
        request = urllib.request.Request(f"{self.api}{path}", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        for attempt in range(5):
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    data = response.read()
                    return json.loads(data) if data else {}
            except urllib.error.HTTPError as exc:  # a busy SQLite-backed server answers 503
                if exc.code != 503 or attempt == 4:
                    raise
                time.sleep(2)
        raise AssertionError("unreachable")

    def drop_runs(self) -> list[dict]:
        runs, offset = [], 0
        while True:
            page = self.post("/flow_runs/filter", {"deployments": {"name": {"any_": ["process-drop"]}},
                                                   "limit": 200, "offset": offset})
            runs += page
            if len(page) < 200:
                return runs
            offset += 200

    def stop(self) -> None:
        from sohoa.orchestration.embedded import stop_process

        for name in ("watcher", "worker", "server", "s3"):  # Prefect's idle worker ignores SIGTERM: stop_process kills
            if name in self.processes and self.processes[name].poll() is None:
                stop_process(self.processes[name], timeout=10)


# --- the run -------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dossiers", type=int, default=200, help="distinct dossiers dropped (default 200)")
    parser.add_argument("--pages-min", type=int, default=5, help="pages per dossier at least (default 5: 1000 pages)")
    parser.add_argument("--stations", type=int, default=2, help="scanning stations the drops come from (default 2)")
    parser.add_argument("--limit", type=int, default=4, help="flow runs the worker takes at once (default 4)")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between the watcher's listings (default 2)")
    parser.add_argument("--timeout", type=float, help="give up after this many seconds of processing "
                                                      "(default: 60 + 30 per dossier)")
    parser.add_argument("--workdir", type=Path, help="keep inputs, S3 data, Prefect database and logs here")
    parser.add_argument("--json-out", type=Path, help="write the results as JSON")
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="sohoa-load-"))
    root.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    dossiers = generate(root / "inputs", args.dossiers, args.pages_min)
    pages = sum(p for _, _, p in dossiers)
    print(f"generated {len(dossiers)} dossiers, {pages} pages in {time.monotonic() - started:.0f} s ({root})",
          file=sys.stderr)

    stack = Stack(root, args.limit, args.poll)
    try:
        stack.start()
        os.environ.update({k: stack.env[k] for k in ("SOHOA_S3_ENDPOINT", "SOHOA_S3_ACCESS_KEY",
                                                     "SOHOA_S3_SECRET_KEY", "SOHOA_S3_REGION")})
        for name in ("SOHOA_S3_SECURE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            os.environ.pop(name, None)
        from sohoa.services import inbox
        from sohoa.storage import open_store

        store, archive = open_store("s3://inbox"), open_store("s3://archive")
        store.ensure_ready()
        wait(lambda: store.exists(inbox.HEARTBEAT), 120, "the watcher's first listing", every=1)
        print(f"stack up in {time.monotonic() - started:.0f} s (logs in {stack.logs}); dropping", file=sys.stderr)
        sampler = Sampler({name: stack.processes[name].pid for name in ("worker", "server", "watcher", "s3")})
        sampler.start()
        time.sleep(3)  # idle memory, before the first drop

        keys: dict[str, str] = {}  # inbox key -> dossier code
        page_count: dict[str, int] = {}
        first_drop = time.monotonic()
        dropped_at = {}
        for index, (path, code, count) in enumerate(dossiers):
            key = f"quay-{index % args.stations + 1}/{path.name}"
            store.put_file(key, path, content_type="application/pdf")
            keys[key], page_count[key] = code, count
            dropped_at[key] = time.monotonic()
        last_put = time.monotonic()
        print(f"dropped {len(keys)} dossiers in {last_put - first_drop:.1f} s", file=sys.stderr)

        archived_at: dict[str, float] = {}
        quarantined: set[str] = set()  # now
        ever_quarantined: set[str] = set()  # a failed attempt moves the input to quarantine; its retry moves it out
        deadline = first_drop + (args.timeout or 60 + 30 * len(keys))
        shown = checked = 0.0
        while len(archived_at) < len(keys) and time.monotonic() < deadline:
            now = time.monotonic()
            for info in store.list(inbox.DONE):
                key = info.key[len(inbox.DONE):].split("/", 1)[-1]  # done/<drop id>/<key>
                if key in keys and key not in archived_at:
                    archived_at[key] = now
            quarantined = {k for i in store.list(inbox.QUARANTINE)
                           if (k := i.key[len(inbox.QUARANTINE):].split("/", 1)[-1]) in keys}
            ever_quarantined |= quarantined
            if now - shown >= 30:
                shown = now
                print(f"  {now - first_drop:6.0f} s: {len(archived_at)}/{len(keys)} archived, "
                      f"{len(quarantined)} quarantined", file=sys.stderr)
            if len(archived_at) + len(quarantined) >= len(keys) and now - checked >= 10:
                checked = now  # what is left is quarantined: stop once no run of it can try again
                if all(r["state_type"] in TERMINAL for r in stack.drop_runs()):
                    break
            time.sleep(1)
        end = max(archived_at.values(), default=time.monotonic())
        time.sleep(3)  # and a little after
        sampler.stop()

        # --- what became of every drop -------------------------------------------------------------
        outcomes = {o.drop.key: o for o in inbox.outcomes(store)}
        ledger = inbox.ledger(store, open_store("s3://work"))
        manifests = [info.key for info in archive.list("dossiers/") if info.key.endswith("/manifest.json")]
        per_code: dict[str, int] = {}
        for key in manifests:
            ident = key.rsplit("/", 2)[-2]
            per_code[ident] = per_code.get(ident, 0) + 1
        siblings = sorted({k.split("/manifest.json")[0] for k in manifests if "~" in k})
        runs = stack.drop_runs()
        states = {}
        for run in runs:
            states[run["state_name"]] = states.get(run["state_name"], 0) + 1
        left = [info.key for info in store.list("") if info.key in keys]
        wall = end - first_drop
        latencies = sorted(archived_at[k] - dropped_at[k] for k in archived_at)
        statuses: dict[str, int] = {}
        for key in keys:
            status = outcomes[key].status if key in outcomes else ("suspended (review)" if key in archived_at else "none")
            statuses[status] = statuses.get(status, 0) + 1

        checks = {
            "every drop archived": len(archived_at) == len(keys),
            "none quarantined (failed or refused)": not quarantined,
            "no failed, refused or duplicate outcome": all(o.status in FINISHED for o in outcomes.values()),
            "one manifest per dossier code": set(per_code) == set(keys.values()) and set(per_code.values()) == {1},
            "no ~ sibling prefix": not siblings,
            "one ledger entry per drop": len(ledger) == len(keys) and {e.drop.key for e in ledger} == set(keys),
            "one process-drop run per drop": len(runs) == len(keys)
                                             and len({r["idempotency_key"] for r in runs}) == len(keys),
            "no run failed or crashed": not {"Failed", "Crashed"} & set(states),
            "no attempt failed (no run retried)": all(r.get("run_count", 1) <= 1 for r in runs) and not ever_quarantined,
            "inbox empty": not left,
        }
        archived_pages = sum(page_count[k] for k in archived_at)
        jobs = int(os.environ.get("SOHOA_JOBS") or os.cpu_count() or 1)
        result = {
            "dossiers": len(keys), "pages": pages, "archived": len(archived_at), "archived_pages": archived_pages,
            "stations": args.stations, "worker_limit": args.limit, "jobs": jobs,
            "wall_s": round(wall, 1), "drop_s": round(last_put - first_drop, 1),
            "pages_per_min": round(archived_pages / wall * 60, 1) if wall > 0 else None,
            "dossiers_per_min": round(len(archived_at) / wall * 60, 2) if wall > 0 else None,
            "latency_s": {"median": round(statistics.median(latencies), 1) if latencies else None,
                          "p90": round(latencies[int(0.9 * (len(latencies) - 1))], 1) if latencies else None,
                          "max": round(latencies[-1], 1) if latencies else None},
            "statuses": statuses, "flow_run_states": states,
            "retried_runs": sum(1 for r in runs if r.get("run_count", 1) > 1),
            "quarantined_then_retried": sorted(ever_quarantined - quarantined), "quarantined": sorted(quarantined),
            "memory": sampler.summary(first_drop, end),
            "checks": checks, "workdir": str(root),
        }
    finally:
        stack.stop()
    report(result)
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
    if not args.workdir and all(result["checks"].values()):
        shutil.rmtree(root, ignore_errors=True)
    return 0 if all(result["checks"].values()) else 1


def report(result: dict) -> None:
    rows = [("dossiers", result["dossiers"]), ("pages", result["pages"]), ("archived", result["archived"]),
            ("wall time, first drop to last archive", f"{result['wall_s']} s (drops took {result['drop_s']} s)"),
            ("pages per minute", result["pages_per_min"]), ("dossiers per minute", result["dossiers_per_min"]),
            ("drop-to-archive latency", "median {median} s, p90 {p90} s, max {max} s".format(**result["latency_s"])),
            ("outcomes", ", ".join(f"{k} {v}" for k, v in sorted(result["statuses"].items()))),
            ("process-drop runs", ", ".join(f"{k} {v}" for k, v in sorted(result["flow_run_states"].items()))
             + f"; {result['retried_runs']} retried after a failed attempt")]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"\n{'RSS (MiB)':<10} {'idle':>8} {'10%':>8} {'50%':>8} {'90%':>8} {'peak':>8}")
    for name, m in result["memory"].items():
        print(f"{name:<10} {m['idle_mib'] if m['idle_mib'] is not None else '-':>8} {m['at_10pct_mib']:>8} "
              f"{m['at_50pct_mib']:>8} {m['at_90pct_mib']:>8} {m['peak_mib']:>8}")
    print()
    for name, ok in result["checks"].items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")


if __name__ == "__main__":
    sys.exit(main())
