"""Stores are opened once per process: what a store asks its S3 server about itself (conditional
writes, object lock, the bucket) is asked once per URL and settings, however often flows call
open_store. And the storage package's modules import each other without a cycle."""

from __future__ import annotations

import ast
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import urllib3
from minio import Minio
from minio.error import S3Error

from sohoa.storage import S3Settings, StorageError, forget_stores, open_store
from sohoa.storage.lock import ObjectLock

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ counting what reaches the server
class Requests:
    """Every request a minio client sends in this test, as (method, object name, sub-resources)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, tuple[str, ...]]] = []
        self._guard = threading.Lock()

    def add(self, method: str, object_name: str | None, query: dict | None) -> None:
        with self._guard:
            self.sent.append((method, object_name or "", tuple(sorted(query or {}))))

    def probes(self) -> Counter:
        """Probe requests by kind: bucket checks, object-lock reads, conditional-write probe objects."""
        kinds: Counter = Counter()
        for method, name, query in self.sent:
            if method == "HEAD" and not name:
                kinds["bucket"] += 1
            elif method == "GET" and "object-lock" in query:
                kinds["object_lock"] += 1
            elif method == "PUT" and "/.sohoa/probe/" in f"/{name}" and not query:
                kinds["conditional_put"] += 1
        return kinds


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Requests:
    seen, real = Requests(), Minio._execute

    def counting(self, method, bucket_name=None, object_name=None, *args, **kwargs):
        seen.add(method, object_name, kwargs.get("query_params"))
        return real(self, method, bucket_name, object_name, *args, **kwargs)

    monkeypatch.setattr(Minio, "_execute", counting)
    return seen


def _use(store, n: int) -> None:
    """What a flow run does with a store: check it is ready, look at object lock, claim a key."""
    store.ensure_ready()
    store.lock_policy()
    store.put_bytes(f"claim-{n}", b"x", create_only=True)


#: One conditional-write probe is two PUTs of one probe object (the second must be refused).
ONCE = {"bucket": 1, "object_lock": 1, "conditional_put": 2}


# ------------------------------------------------------------------------------------ shared stores
def test_each_probe_runs_once_per_url_across_open_store_calls(s3_settings, s3_store_url, sent):
    for n in range(4):
        _use(open_store(s3_store_url, s3_settings), n)
    assert sent.probes() == ONCE
    assert open_store(s3_store_url + "/", S3Settings(**s3_settings.model_dump())) is open_store(s3_store_url, s3_settings)


def test_another_url_or_other_settings_is_another_store_with_its_own_probes(s3_settings, s3_store_url, sent):
    store = open_store(s3_store_url, s3_settings)
    _use(store, 0)
    sibling = open_store(s3_store_url.rsplit("/", 1)[0] + "/other", s3_settings)  # same bucket, another prefix
    _use(sibling, 0)
    assert sibling is not store and sent.probes() == {k: 2 * v for k, v in ONCE.items()}
    other = s3_settings.model_copy(update={"part_size": 8 * 1024 * 1024})
    assert open_store(s3_store_url, other) is not store
    other_user = S3Settings(**{**s3_settings.model_dump(), "access_key": "someone-else"})
    assert open_store(s3_store_url, other_user) is not store


def test_settings_from_the_environment_pick_the_store(s3_env, s3_store_url, monkeypatch, sent):
    store = open_store(s3_store_url)
    for n in range(3):
        _use(open_store(s3_store_url), n)
    assert open_store(s3_store_url) is store and sent.probes() == ONCE
    monkeypatch.setenv("SOHOA_S3_REGION", "eu-west-1")
    assert open_store(s3_store_url) is not store


def test_threads_opening_one_url_at_once_share_one_store_and_one_probe_each(s3_settings, s3_store_url, sent):
    start, stores, failures = threading.Barrier(8), [], []

    def run(n: int) -> None:
        start.wait()
        try:
            store = open_store(s3_store_url, s3_settings)
            _use(store, n)
            stores.append(store)
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures and len({id(s) for s in stores}) == 1
    assert sent.probes() == ONCE
    assert sorted(o.key for o in stores[0].list()) == [f"claim-{n}" for n in range(8)]


def test_forget_stores_gives_a_fresh_store_that_probes_again(s3_settings, s3_store_url, sent):
    before = open_store(s3_store_url, s3_settings)
    _use(before, 0)
    forget_stores()
    after = open_store(s3_store_url, s3_settings)
    _use(after, 1)
    assert after is not before and sent.probes() == {k: 2 * v for k, v in ONCE.items()}
    before.put_bytes("still-works", b"x")  # a store handed out before keeps working


def test_a_failed_bucket_check_is_not_remembered(s3_settings, s3_store_url, sent):
    store = open_store(s3_store_url, s3_settings.model_copy(update={"create_bucket": False}))
    for _ in range(2):
        with pytest.raises(StorageError, match="does not exist"):
            store.ensure_ready()
    assert sent.probes()["bucket"] == 2
    open_store(s3_store_url, s3_settings).ensure_ready()  # someone creates it
    store.ensure_ready()
    store.ensure_ready()
    assert sent.probes()["bucket"] == 4


def test_local_stores_need_no_probes_and_work_from_any_call(tmp_path):
    first, second = open_store(str(tmp_path / "s")), open_store(str(tmp_path / "s"))
    first.ensure_ready()
    first.put_bytes("k", b"v")
    assert second.get_bytes("k") == b"v" and second.url == first.url


# -------------------------------------------------------------------------------------- object lock
class FakeClient:
    """A minio client whose ``GET ?object-lock`` answers are given in order; records retention calls."""

    def __init__(self, *answers: object) -> None:
        self.answers, self.asked, self.retained = list(answers), 0, []

    def _execute(self, method, bucket, query_params=None):
        assert (method, query_params) == ("GET", {"object-lock": ""})
        self.asked += 1
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return type("Response", (), {"data": answer})()

    def set_object_retention(self, bucket, name, retention):
        self.retained.append(name)


ENABLED = b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled></ObjectLockConfiguration>"
NOT_CONFIGURED = S3Error("ObjectLockConfigurationNotFoundError", "none", "b", "req", "host", None)


@pytest.mark.parametrize("answer", [ENABLED, b"<ListBucketResult/>", NOT_CONFIGURED])
def test_the_servers_answer_on_object_lock_is_kept(answer):
    client = FakeClient(answer)
    lock = ObjectLock(client, "b")  # type: ignore[arg-type]
    assert lock.policy() == lock.policy()
    assert client.asked == 1


def test_no_answer_on_object_lock_means_disabled_now_and_asking_again_later():
    client = FakeClient(urllib3.exceptions.MaxRetryError(None, "/", "refused"), ENABLED)
    lock = ObjectLock(client, "b")  # type: ignore[arg-type]
    assert not lock.policy().enabled  # no retention requests while unknown
    assert lock.policy().enabled and lock.policy().enabled
    assert client.asked == 2


def test_retention_is_never_requested_without_an_enabled_policy():
    client = FakeClient(b"<ListBucketResult/>")
    with pytest.raises(StorageError, match="no object lock"):
        ObjectLock(client, "b").retain("k", "GOVERNANCE", datetime.now(UTC))  # type: ignore[arg-type]
    assert client.retained == []


# ------------------------------------------------------------------------------------ module graph
def _module_path(module: str) -> Path | None:
    base = REPO / module.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(node: ast.ImportFrom, package: str) -> list[str]:
    if node.level:
        parts = package.split(".")
        base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [f"{base}.{a.name}" if _module_path(f"{base}.{a.name}") else base for a in node.names]


def names_imported_by(module: str) -> set[str]:
    """Every module ``module`` imports anywhere in its text: at the top, in functions, under TYPE_CHECKING."""
    path = _module_path(module)
    assert path is not None, module
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found |= set(_imported(node, package))
    return found


def imports_of(module: str) -> set[str]:
    """The sohoa modules among :func:`names_imported_by`."""
    return {name for name in names_imported_by(module) if name == "sohoa" or name.startswith("sohoa.")}


def graph_of(modules: set[str]) -> dict[str, list[str]]:
    """Import edges between ``modules`` (an import of a module outside the set is no edge)."""
    return {m: sorted(imports_of(m) & modules - {m}) for m in modules}


def cycle_in(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle of ``graph`` as the modules along it (first one repeated at the end), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        for nxt in graph[node]:
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in done and (found := visit(nxt, [*path, nxt])):
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done and (found := visit(start, [start])):
            return found
    return None


def _package_modules(package: str) -> set[str]:
    folder = REPO / package.replace(".", "/")
    return {package} | {f"{package}.{p.stem}" for p in folder.glob("*.py") if p.stem != "__init__"}


def test_the_storage_modules_import_each_other_without_a_cycle():
    assert cycle_in(graph_of(_package_modules("sohoa.storage"))) is None


def test_storage_imports_nothing_of_sohoa_above_it():
    """Only itself and the kernel (errors, exit codes): steps, services and flows sit above storage."""
    for module in sorted(_package_modules("sohoa.storage")):
        assert {m for m in imports_of(module) if not m.startswith(("sohoa.storage", "sohoa.kernel"))} == set(), module


def test_the_graph_check_sees_imports_in_functions_and_finds_cycles():
    assert "sohoa.storage.s3" in imports_of("sohoa.storage")  # open_store imports it inside a function
    assert cycle_in({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": ["b"], "b": [], "c": ["a", "b"]}) is None
