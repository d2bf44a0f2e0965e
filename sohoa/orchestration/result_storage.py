"""Prefect result storage on top of sohoa's own storage interface.

Step results are persisted in the configured work store (a directory or S3), through the
same code that writes archives, so one set of credentials and one S3 client serve both.
Credentials are never part of the block: they come from the environment (``SOHOA_S3_*``).
"""

from __future__ import annotations

import threading
from functools import cached_property, lru_cache

import anyio
from prefect._internal.compatibility.async_dispatch import async_dispatch
from prefect.exceptions import ObjectAlreadyExists
from prefect.filesystems import WritableFileSystem

from sohoa.kernel.keys import sha256_bytes
from sohoa.services.results import RESULTS_PREFIX
from sohoa.storage import ObjectNotFound, Store, open_store


class SohoaResultStorage(WritableFileSystem):
    """Prefect ``WritableFileSystem`` over a sohoa store URL (results under ``results/``)."""

    _block_type_name = "Sohoa Result Storage"
    url: str

    @cached_property
    def _store(self) -> Store:
        return open_store(self.url)

    def _key(self, path: str) -> str:
        return RESULTS_PREFIX + path.lstrip("/")

    def has(self, path: str) -> bool:
        """Whether a result is persisted under ``path`` (a step key): one stat, nothing read."""
        return self._store.exists(self._key(path))

    async def aread_path(self, path: str) -> bytes:
        return await anyio.to_thread.run_sync(self._read, path)

    def _read(self, path: str) -> bytes:
        try:
            return self._store.get_bytes(self._key(path))
        except ObjectNotFound:
            raise ValueError(f"result {path} does not exist") from None

    @async_dispatch(aread_path)
    def read_path(self, path: str) -> bytes:
        return self._read(path)

    async def awrite_path(self, path: str, content: bytes) -> str:
        return await anyio.to_thread.run_sync(self._write, path, content)

    def _write(self, path: str, content: bytes) -> str:
        self._store.put_bytes(self._key(path), content, content_type="application/json")
        return self._key(path)

    @async_dispatch(awrite_path)
    def write_path(self, path: str, content: bytes) -> str:
        return self._write(path, content)


_SAVING = threading.Lock()


def result_storage_for(url: str) -> SohoaResultStorage:
    """The saved block for ``url``: one thread at a time saves it (flow runs start side by side in the worker)."""
    with _SAVING:
        return _saved(url)


@lru_cache(maxsize=16)
def _saved(url: str) -> SohoaResultStorage:
    """The saved block for ``url`` (Prefect persists results only through saved blocks).

    Saved once per process under a name derived from the URL; it holds no credentials.
    """
    block = SohoaResultStorage(url=url)
    name = f"sohoa-results-{sha256_bytes(url.encode())[:12]}"
    try:
        block.save(name, overwrite=True)
    except ObjectAlreadyExists:  # another process registered the block type or saved the block just now
        block.save(name, overwrite=True)
    return block
