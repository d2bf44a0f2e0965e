"""Cache policy: the key is the content-addressed step key computed by ``sohoa.kernel.keys``.

Prefect's default policy includes the run id and so caches only within one flow run; ours
makes a step's persisted result reusable by any later run that reaches the same store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect.cache_policies import CachePolicy


@dataclass
class StepKey(CachePolicy):
    """Use the task's ``key`` argument as its cache key."""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        return inputs.get("key")


STEP_KEY = StepKey()
