"""In-memory execution records for the local backend: bounded in bytes and in time."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from sandbox_api.models import ExecutionResult


@dataclass
class Record:
    tenant: str
    result: ExecutionResult
    done: asyncio.Event = field(default_factory=asyncio.Event)
    finished_at: float = 0.0
    size: int = 0


# What a record costs beyond its strings: the objects around them, the dictionaries' slots.
RECORD_OVERHEAD_BYTES = 2048


def result_size(result: ExecutionResult) -> int:
    """The memory a finished result holds, estimated from its strings (as Python stores them)."""
    strings = [result.stdout, result.stderr, result.reason or ""]
    for name, value in result.output_files.items():
        strings += [name, value if isinstance(value, str) else value.content]
    return RECORD_OVERHEAD_BYTES + sum(sys.getsizeof(text) for text in strings)


class ExecutionStore:
    """Executions by id; finished ones are forgotten after `retention_seconds`, and oldest first
    while their results together hold more than `max_bytes`.

    Unfinished records are never forgotten: the API's admission limit bounds how many there are,
    and they hold no output yet.
    """

    def __init__(self, *, retention_seconds: float, max_bytes: int):
        self.retention_seconds = retention_seconds
        self.max_bytes = max_bytes
        self.finished_bytes = 0
        self._unfinished: dict[str, Record] = {}
        self._finished: OrderedDict[str, Record] = OrderedDict()  # oldest first

    def add(self, execution_id: str, tenant: str, result: ExecutionResult) -> None:
        self._unfinished[execution_id] = Record(tenant=tenant, result=result)

    def update(self, execution_id: str, result: ExecutionResult) -> None:
        record = self._unfinished.get(execution_id)
        if record is None:
            return
        record.result = result
        if result.finished:
            del self._unfinished[execution_id]
            record.finished_at = time.monotonic()
            record.size = result_size(result)
            self.finished_bytes += record.size
            self._finished[execution_id] = record
            record.done.set()
            self._expire()

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
        record = self._unfinished.get(execution_id) or self._finished.get(execution_id)
        # Another tenant's execution is indistinguishable from an unknown one.
        return record if record is not None and record.tenant == tenant else None

    def _expire(self) -> None:
        now = time.monotonic()
        while self._finished:
            oldest = next(iter(self._finished.values()))
            if self.finished_bytes <= self.max_bytes and now - oldest.finished_at <= self.retention_seconds:
                break
            self._finished.popitem(last=False)
            self.finished_bytes -= oldest.size
