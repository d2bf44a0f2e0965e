"""One behavioural contract for every Store backend (local disk and S3 via ministack).

Run: .venv/bin/python -m pytest tests/test_storage_contract.py -q -p tests.s3_fixtures
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest

from sohoa.storage import (InvalidKey, LocalStore, ObjectExists, ObjectNotFound, S3Settings, StorageError,
                           StorageUnavailable, Store, open_store)
from sohoa.storage.s3 import S3Store

VN_KEY = "hồ-sơ/tờ khai.pdf"
BAD_KEYS = ["../x", "/abs", "a//b", "a\x00b", "a\\b", "x" * 2000, "", "a/", "./a", "a\x7fb", "\ud800x", ".sohoa-meta/a"]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        st: Store = LocalStore(tmp_path / "store")
    else:
        st = S3Store(request.getfixturevalue("s3_store_url"), request.getfixturevalue("s3_settings"))
    st.ensure_ready()
    return st


# --------------------------------------------------------------- round trips
def test_bytes_round_trip(store: Store) -> None:
    info = store.put_bytes("a/b.txt", b"xin chao")
    assert info.key == "a/b.txt" and info.size == 8
    assert store.get_bytes("a/b.txt") == b"xin chao"
    assert store.put_bytes("empty", b"").size == 0
    assert store.get_bytes("empty") == b""


def test_file_round_trip_10mb(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "scan.bin"
    payload = os.urandom(10 * 1024 * 1024)
    src.write_bytes(payload)
    info = store.put_file("scans/scan.bin", src, content_type="application/pdf")
    assert info.size == len(payload)
    dest_dir = tmp_path / "out"
    dest_dir.mkdir()
    dest = dest_dir / "scan.bin"
    dest.write_bytes(b"old content")  # get_file must replace it
    store.get_file("scans/scan.bin", dest)
    assert dest.read_bytes() == payload
    assert sorted(p.name for p in dest_dir.iterdir()) == ["scan.bin"], "temp file left beside dest"


def test_stat_reports_size_type_and_metadata(store: Store) -> None:
    store.put_bytes("doc.json", b"{}", content_type="application/json", metadata={"doc-kind": "to-khai", "v": "2"})
    info = store.stat("doc.json")
    assert info.size == 2
    assert info.content_type == "application/json"
    assert info.metadata == {"doc-kind": "to-khai", "v": "2"}
    assert info.etag
    assert store.stat("doc.json").etag == info.etag  # stable while unchanged
    store.put_bytes("plain", b"x")
    assert store.stat("plain").content_type == "application/octet-stream"
    assert store.stat("plain").metadata == {}


def test_missing_key(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound):
        store.get_bytes("nope/missing")
    with pytest.raises(ObjectNotFound):
        store.stat("nope/missing")
    with pytest.raises(ObjectNotFound):
        store.copy("nope/missing", "dst")
    dest = tmp_path / "dl.bin"
    with pytest.raises(ObjectNotFound):
        store.get_file("nope/missing", dest)
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == [] or all(p.name in {"store"} for p in tmp_path.iterdir())
    assert store.exists("nope/missing") is False
    store.put_bytes("dir/file", b"x")
    with pytest.raises(ObjectNotFound):
        store.stat("dir")  # a prefix is not an object


# ------------------------------------------------------------- create / overwrite
def test_create_only(store: Store) -> None:
    store.put_bytes("claim", b"first", create_only=True, metadata={"who": "a"})
    with pytest.raises(ObjectExists):
        store.put_bytes("claim", b"second", create_only=True, metadata={"who": "b"})
    assert store.get_bytes("claim") == b"first"
    assert store.stat("claim").metadata == {"who": "a"}


def test_create_only_put_file(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(b"file-1")
    store.put_file("f", src, create_only=True)
    src.write_bytes(b"file-2")
    with pytest.raises(ObjectExists):
        store.put_file("f", src, create_only=True)
    assert store.get_bytes("f") == b"file-1"


def test_overwrite(store: Store) -> None:
    store.put_bytes("k", b"one", metadata={"rev": "1"}, content_type="text/plain")
    store.put_bytes("k", b"two!", metadata={"rev": "2"})
    assert store.get_bytes("k") == b"two!"
    info = store.stat("k")
    assert info.size == 4 and info.metadata == {"rev": "2"}
    assert info.content_type == "application/octet-stream"


def test_create_only_race_one_winner(store: Store) -> None:
    n = 8
    barrier = threading.Barrier(n)
    results: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        barrier.wait()
        try:
            store.put_bytes("race/key", f"writer-{i}".encode(), create_only=True)
            outcome = f"won-{i}"
        except ObjectExists:
            outcome = "lost"
        except Exception as exc:  # noqa: BLE001 - surface anything unexpected
            outcome = f"error {exc!r}"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [r for r in results if r.startswith("won-")]
    assert len(results) == n
    assert results.count("lost") == n - 1, results
    assert len(winners) == 1
    assert store.get_bytes("race/key") == f"writer-{winners[0][4:]}".encode()


# --------------------------------------------------------------------- listing
def test_list_prefix_sorted_recursive(store: Store) -> None:
    keys = ["b/2", "b/1", "b/sub/deep/x", "b-sibling", "bz", "a/1", "b/ä", "b/Z", VN_KEY]
    for k in keys:
        store.put_bytes(k, k.encode())
    listed = [o.key for o in store.list("b/")]
    assert listed == sorted(k for k in keys if k.startswith("b/"))
    assert listed == ["b/1", "b/2", "b/Z", "b/sub/deep/x", "b/ä"]
    assert [o.key for o in store.list("b")] == sorted(k for k in keys if k.startswith("b"))
    assert [o.key for o in store.list()] == sorted(keys)
    sizes = {o.key: o.size for o in store.list()}
    assert sizes["b/sub/deep/x"] == len(b"b/sub/deep/x")
    assert list(store.list("nothing-here/")) == []


def test_list_paginates_s3(s3_store_url: str, s3_settings: S3Settings) -> None:
    st = S3Store(s3_store_url, s3_settings)
    st.ensure_ready()
    from concurrent.futures import ThreadPoolExecutor

    keys = [f"p/{i:05d}" for i in range(1100)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: st.put_bytes(k, b"x"), keys))
    st.put_bytes("q/outside", b"x")
    listed = [o.key for o in st.list("p/")]
    assert listed == keys  # >1000 needs a continuation page; order must be preserved


# --------------------------------------------------------------- copy / delete
def test_copy_keeps_metadata(store: Store) -> None:
    store.put_bytes("src", b"payload", metadata={"ma-ho-so": "000.00.01.H29-240101-0001"}, content_type="image/tiff")
    info = store.copy("src", "copies/dst")
    assert info.key == "copies/dst"
    assert store.get_bytes("copies/dst") == b"payload"
    st = store.stat("copies/dst")
    assert st.metadata == {"ma-ho-so": "000.00.01.H29-240101-0001"}
    assert st.content_type == "image/tiff"
    assert store.get_bytes("src") == b"payload"


def test_delete_idempotent(store: Store) -> None:
    store.put_bytes("gone", b"x", metadata={"a": "b"})
    assert store.exists("gone")
    store.delete("gone")
    assert store.exists("gone") is False
    with pytest.raises(ObjectNotFound):
        store.stat("gone")
    store.delete("gone")
    store.delete("never/existed")
    assert [o.key for o in store.list()] == []
    # a fresh object at the same key must not inherit old metadata
    store.put_bytes("gone", b"y")
    assert store.stat("gone").metadata == {}


# ---------------------------------------------------------------------- keys
@pytest.mark.parametrize("bad", BAD_KEYS, ids=repr)
def test_invalid_keys_rejected_everywhere(store: Store, bad: str, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"x")
    store.put_bytes("good", b"x")
    calls = [
        lambda: store.put_bytes(bad, b"x"),
        lambda: store.put_bytes(bad, b"x", create_only=True),
        lambda: store.put_file(bad, src),
        lambda: store.get_bytes(bad),
        lambda: store.get_file(bad, tmp_path / "out"),
        lambda: store.stat(bad),
        lambda: store.exists(bad),
        lambda: store.copy(bad, "good2"),
        lambda: store.copy("good", bad),
        lambda: store.delete(bad),
        lambda: store.url_for(bad),
    ]
    for call in calls:
        with pytest.raises(InvalidKey):
            call()
    assert not (tmp_path / "out").exists()
    assert [o.key for o in store.list()] == ["good"]


def test_invalid_list_prefix(store: Store) -> None:
    for bad in ["../", "/abs", "a//", "a\\"]:
        with pytest.raises(InvalidKey):
            list(store.list(bad))


def test_invalid_metadata(store: Store) -> None:
    for meta in [{"k": "Hồ sơ"}, {"UPPER": "x"}, {"k_underscore": "x"}, {"k": "line\nbreak"}, {"k": " pad"}]:
        with pytest.raises(ValueError):
            store.put_bytes("m", b"x", metadata=meta)
    assert store.exists("m") is False


def test_vietnamese_keys_round_trip(store: Store, tmp_path: Path) -> None:
    import unicodedata

    assert unicodedata.is_normalized("NFC", VN_KEY)
    store.put_bytes(VN_KEY, "nội dung".encode(), metadata={"loai": "to-khai"})
    assert store.get_bytes(VN_KEY) == "nội dung".encode()
    assert store.stat(VN_KEY).metadata == {"loai": "to-khai"}
    assert [o.key for o in store.list("hồ-sơ/")] == [VN_KEY]
    dest = tmp_path / "tờ khai.pdf"
    store.get_file(VN_KEY, dest)
    assert dest.read_bytes() == "nội dung".encode()


def test_url_for(store: Store, tmp_path: Path) -> None:
    if isinstance(store, LocalStore):
        assert store.url_for("a/b.pdf") == str(tmp_path / "store" / "a" / "b.pdf")
        assert os.path.isabs(store.url_for("a/b.pdf"))
    else:
        assert store.url.startswith("s3://t-") and store.url.endswith("/pre/fix")
        assert store.url_for("a/b.pdf") == f"{store.url}/a/b.pdf"


def test_no_temp_files_left_local(tmp_path: Path) -> None:
    st = LocalStore(tmp_path / "s")
    st.ensure_ready()
    st.put_bytes("a", b"1")
    with pytest.raises(ObjectExists):
        st.put_bytes("a", b"2", create_only=True)
    with pytest.raises(StorageError):
        st.put_bytes("a/child", b"3")  # "a" is an object, cannot also be a directory
    assert list((tmp_path / "s" / ".sohoa-tmp").iterdir()) == []
    assert [o.key for o in st.list()] == ["a"]


def test_local_requires_root(tmp_path: Path) -> None:
    st = LocalStore(tmp_path / "missing")
    with pytest.raises(StorageError, match="ensure_ready"):
        st.put_bytes("a", b"x")
    assert st.exists("a") is False
    assert list(st.list()) == []


# ----------------------------------------------------------------- dispatch
def test_open_store_dispatch(tmp_path: Path, s3_settings: S3Settings) -> None:
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert open_store(str(tmp_path)).url == str(tmp_path)
    assert isinstance(open_store(tmp_path), LocalStore)
    fs = open_store(f"file://{tmp_path}/sub")
    assert isinstance(fs, LocalStore) and fs.url == str(tmp_path / "sub")
    s3 = open_store("s3://bucket-x/some/prefix", s3_settings)
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix) == ("bucket-x", "some/prefix/")
    assert s3.url_for("k") == "s3://bucket-x/some/prefix/k"
    assert isinstance(open_store("s3://bucket-y", s3_settings), S3Store)
    for bad in ["ftp://x", "http://example.com/x", "s3://", "s3://Bad_Bucket", "s3://b/../x"]:
        with pytest.raises(StorageError):
            open_store(bad, s3_settings)


def test_open_store_s3_uses_env(s3_env, s3_store_url: str) -> None:
    st = open_store(s3_store_url)
    st.ensure_ready()
    st.put_bytes("env", b"ok")
    assert st.get_bytes("env") == b"ok"


# --------------------------------------------------------------- S3 specifics
def test_s3_unreachable_endpoint(caplog: pytest.LogCaptureFixture) -> None:
    import urllib3

    with socket_closed_port() as port:
        settings = S3Settings(
            endpoint=f"http://127.0.0.1:{port}", access_key="AKIAUNREACHABLE", secret_key="sup3r-s3cret-value"
        )
        st = S3Store("s3://bucket-z/p", settings)
        calls = [
            st.ensure_ready,  # with the SDK's own retries (~6 s)
            lambda: st.get_bytes("k"),
            lambda: st.put_bytes("k", b"x", create_only=True),
            lambda: list(st.list()),
        ]
        for i, call in enumerate(calls):
            if i == 1:
                # Same code path without the SDK's retry back-off, to keep the suite fast.
                st._client._http = urllib3.PoolManager(retries=urllib3.Retry(total=0))
            with pytest.raises(StorageError) as excinfo:
                call()
            msg = str(excinfo.value)
            assert msg.startswith(f"cannot reach S3 endpoint 127.0.0.1:{port} for s3://bucket-z/p: "), msg
            assert isinstance(excinfo.value, StorageUnavailable) and excinfo.value.store == "s3://bucket-z/p"
            assert "refused" in msg.lower(), msg
            assert "sup3r-s3cret-value" not in msg and "AKIAUNREACHABLE" not in msg
            assert "\n" not in msg and "object at 0x" not in msg
            assert not isinstance(excinfo.value, ObjectNotFound)
            assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__
    assert "sup3r-s3cret-value" not in caplog.text


def test_s3_missing_bucket_without_create(s3_settings: S3Settings, s3_store_url: str) -> None:
    settings = s3_settings.model_copy(update={"create_bucket": False})
    st = S3Store(s3_store_url, settings)
    with pytest.raises(StorageError, match="does not exist"):
        st.ensure_ready()
    with pytest.raises(StorageError) as excinfo:
        st.put_bytes("k", b"x")
    assert "sohoa-test-secret" not in str(excinfo.value)


def test_s3_create_only_is_server_side_conditional(
    s3_store_url: str, s3_settings: S3Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    first = S3Store(s3_store_url, s3_settings)
    first.ensure_ready()
    first.put_bytes("warmup", b"x", create_only=True)  # runs the capability probe
    assert first._cond_supported is True, "ministack honours If-None-Match; probe should detect it"
    assert [o.key for o in first.list()] == ["warmup"], "probe object must be cleaned up"

    second = S3Store(s3_store_url, s3_settings)
    second.put_bytes("doc", b"from-second")

    # From here on the first store must not look before it writes: only the conditional PUT may decide.
    def no_stat(*a: object, **k: object) -> None:
        raise AssertionError("create_only must not stat when the server supports conditional PUT")

    monkeypatch.setattr(first._client, "stat_object", no_stat)
    with pytest.raises(ObjectExists):
        first.put_bytes("doc", b"from-first", create_only=True)
    assert second.get_bytes("doc") == b"from-second"
    assert "ignores" not in caplog.text


def test_s3_fallback_when_server_ignores_conditions(
    s3_store_url: str, s3_settings: S3Settings, caplog: pytest.LogCaptureFixture
) -> None:
    st = S3Store(s3_store_url, s3_settings)
    st.ensure_ready()
    real_headers = st._headers
    st._headers = lambda ctype, meta, conditional: real_headers(ctype, meta, False)  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="sohoa.storage"):
        st.put_bytes("x", b"1", create_only=True)
        with pytest.raises(ObjectExists):
            st.put_bytes("x", b"2", create_only=True)
    assert st._cond_supported is False
    assert "If-None-Match" in caplog.text
    assert st.get_bytes("x") == b"1"
    assert [o.key for o in st.list()] == ["x"]


def test_s3_large_create_only_uses_multipart(s3_store_url: str, s3_settings: S3Settings, tmp_path: Path) -> None:
    settings = s3_settings.model_copy(update={"part_size": 5 * 1024 * 1024})
    st = S3Store(s3_store_url, settings)
    st.ensure_ready()
    src = tmp_path / "big.bin"
    payload = os.urandom(11 * 1024 * 1024)
    src.write_bytes(payload)
    st.put_file("big", src, create_only=True, metadata={"pages": "3"})
    with pytest.raises(ObjectExists):
        st.put_file("big", src, create_only=True)
    assert st.get_bytes("big") == payload
    assert st.stat("big").metadata == {"pages": "3"}


class socket_closed_port:
    """Context manager yielding a localhost port with nothing listening."""

    def __enter__(self) -> int:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        return self.port

    def __exit__(self, *exc: object) -> None:
        return None


def test_s3_timeouts_and_retries_are_settings_with_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """SOHOA_S3_CONNECT_TIMEOUT_S, _READ_TIMEOUT_S, _RETRIES and _BACKOFF_S reach the client's pool; give_up_s is
    the longest one request can take (the defaults: 4 tries of 5 + 60 s and backoffs of 0, 1, 2 s)."""
    assert S3Settings().give_up_s == 4 * 65 + 3
    for name, value in {"CONNECT_TIMEOUT_S": "2", "READ_TIMEOUT_S": "7.5", "RETRIES": "1", "BACKOFF_S": "0.25"}.items():
        monkeypatch.setenv(f"SOHOA_S3_{name}", value)
    settings = S3Settings()
    assert (settings.connect_timeout_s, settings.read_timeout_s, settings.retries, settings.backoff_s) == (2, 7.5, 1, 0.25)
    assert settings.give_up_s == 2 * 9.5
    pool = S3Store("s3://bucket-t/p", settings)._client._http
    timeout = pool.connection_pool_kw["timeout"]
    assert (timeout.connect_timeout, timeout.read_timeout) == (2, 7.5)
    assert pool.connection_pool_kw["retries"].total == 1
    monkeypatch.setenv("SOHOA_S3_READ_TIMEOUT_S", "0")
    with pytest.raises(ValueError):
        S3Settings()
