"""In-memory execution records for the local backend: bounded in count and in time."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from sandbox_api.models import ExecutionResult


@dataclass
class Record:
    tenant: str
    result: ExecutionResult
    done: asyncio.Event = field(default_factory=asyncio.Event)
    finished_at: float | None = None


class ExecutionStore:
    """Executions by id; finished ones are forgotten after `retention_seconds` or beyond `max_records`."""

    def __init__(self, *, retention_seconds: float, max_records: int):
        self.retention_seconds = retention_seconds
        self.max_records = max_records
        self._records: OrderedDict[str, Record] = OrderedDict()

    def add(self, execution_id: str, tenant: str, result: ExecutionResult) -> None:
        self._expire()
        self._records[execution_id] = Record(tenant=tenant, result=result)

    def update(self, execution_id: str, result: ExecutionResult) -> None:
        record = self._records.get(execution_id)
        if record is None:
            return
        record.result = result
        if result.finished:
            record.finished_at = time.monotonic()
            record.done.set()

    def get(self, execution_id: str, tenant: str) -> ExecutionResult | None:
        record = self._find(execution_id, tenant)
        return record.result if record else None

    async def wait(self, execution_id: str, tenant: str, timeout_s: float) -> ExecutionResult | None:
        record = self._find(execution_id, tenant)
        if record is None:
            return None
        try:
            await asyncio.wait_for(record.done.wait(), timeout=max(timeout_s, 0))
        except asyncio.TimeoutError:
            pass
        return record.result

    def _find(self, execution_id: str, tenant: str) -> Record | None:
        self._expire()
        record = self._records.get(execution_id)
        # Another tenant's execution is indistinguishable from an unknown one.
        return record if record is not None and record.tenant == tenant else None

    def _expire(self) -> None:
        now = time.monotonic()
        expired = [
            execution_id
            for execution_id, record in self._records.items()
            if record.finished_at is not None and now - record.finished_at > self.retention_seconds
        ]
        for execution_id in expired:
            del self._records[execution_id]
        # Beyond the count bound, forget the oldest finished records (running ones are bounded by
        # the API's admission limit, so they never need evicting).
        if len(self._records) >= self.max_records:
            for execution_id in [i for i, r in self._records.items() if r.finished_at is not None]:
                if len(self._records) < self.max_records:
                    break
                del self._records[execution_id]
