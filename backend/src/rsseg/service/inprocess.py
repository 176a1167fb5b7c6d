"""The in-process runner: the worker's interface without a subprocess (CLI, tests, scripts).

Every record still goes through its JSON encoding, so code written against it behaves the same
with the WorkerClient. It cannot survive a crash of the model code; the worker can.
"""

from __future__ import annotations

from typing import Optional

from ..execution.feature_cache import FeatureCache
from ..protocol.client import BackendError, Session, WorkerTimeout
from ..protocol.messages import Message, decode
from .jobs import Service


class InProcessRunner(Session):
    def __init__(self, cache: Optional[FeatureCache] = None, idle_timeout: float = 600.0):
        super().__init__(idle_timeout)
        self.service = Service(self._deliver, cache)

    def close(self) -> None:
        self.service.stop()

    def _deliver(self, message: Message) -> None:
        self._inbox.put(decode(message.encode()))

    def _send(self, message: Message) -> None:
        self.service.handle(decode(message.encode()))

    def _on_lost(self, reason: str, timed_out: bool) -> BackendError:
        self.service.stop(timeout=0)  # cannot be killed: ask the job to stop at its next batch
        return WorkerTimeout(f"{reason}; the job was asked to stop")
