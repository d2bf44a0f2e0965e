"""Persisted step results: ``results/<step key>`` in the work store, one JSON record each.

The record is the one Prefect's result storage writes (``{"metadata": ..., "result": "<json>"}``,
JSON serializer, the value as ``{"__class__": ..., "data": ...}``), so a result computed under
Prefect (sohoa/orchestration) is reused by the Prefect-free runner (``sohoa eval``, bench, tests)
and the other way round: one cache, whoever computed it. Reading validates ``data`` against the
step's own result types, so a record survives a module move of its class; anything unreadable
is a miss, and the step runs again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import metadata

from pydantic import BaseModel, ValidationError

from sohoa.storage import ObjectNotFound, Store

RESULTS_PREFIX = "results/"
_SERIALIZER = {"type": "json", "jsonlib": "json", "object_encoder": "prefect.serializers.prefect_json_object_encoder",
               "object_decoder": "prefect.serializers.prefect_json_object_decoder", "dumps_kwargs": {}, "loads_kwargs": {}}


def _prefect_version() -> str:
    try:
        return metadata.version("prefect")
    except metadata.PackageNotFoundError:
        return "3"


def encode(key: str, value: BaseModel) -> bytes:
    """``value`` as a result record Prefect can read back."""
    kind = type(value)
    payload = {"__class__": f"{kind.__module__}.{kind.__qualname__}", "data": value.model_dump(mode="json")}
    record = {"metadata": {"storage_key": key, "expiration": None, "serializer": _SERIALIZER,
                           "prefect_version": _prefect_version(), "storage_block_id": None},
              "result": json.dumps(payload)}
    return json.dumps(record).encode()


def decode(data: bytes, types: tuple[type[BaseModel], ...]) -> BaseModel | None:
    """The value of a record, as the one of ``types`` its class names (None: not a readable record)."""
    try:
        payload = json.loads(json.loads(data)["result"])
        name = str(payload["__class__"]).rpartition(".")[2]
        kind = next(t for t in types if t.__name__ == name)
        return kind.model_validate(payload["data"])
    except (ValueError, KeyError, TypeError, StopIteration, ValidationError):
        return None


class WorkStoreCache:
    """The runner's cache over a work store: what the Prefect flows persist, read and written directly."""

    def __init__(self, work: Store):
        self.work = work

    def has(self, key: str) -> bool:
        return self.work.exists(RESULTS_PREFIX + key)

    def run(self, name: str, key: str | None, refresh: bool, types: tuple[type[BaseModel], ...],
            compute: Callable[[], BaseModel]) -> tuple[BaseModel, bool]:
        """The result under ``key`` (reused: True), else computed now and kept (False); ``key`` None: never kept."""
        if key is None:
            return compute(), False
        found = None if refresh else self._read(key, types)
        if found is not None:
            return found, True
        value = compute()
        self.work.put_bytes(RESULTS_PREFIX + key, encode(key, value), content_type="application/json")
        return value, False

    def _read(self, key: str, types: tuple[type[BaseModel], ...]) -> BaseModel | None:
        try:
            return decode(self.work.get_bytes(RESULTS_PREFIX + key), types)
        except ObjectNotFound:
            return None
