"""SIGTERM and SIGHUP end a job the way the Cancel button does.

`timeout`, a closed terminal or a client stopping the worker send these; without a handler Python
dies on the spot and leaves the job's hidden staged files behind. The first signal cancels: the
engine stops at its next batch and removes what it staged. A second one (a job stuck in one long
model call) exits at once, still unwinding through the engine's clean-up.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

EXIT_TERMINATED = 143  # 128 + SIGTERM, for SIGHUP too: "stopped from outside, cleaned up"
SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextmanager
def stop_on_signals(stop: Callable[[], None], signals: tuple[int, ...] = SIGNALS) -> Iterator[list[int]]:
    """Call `stop` on the first SIGTERM/SIGHUP (or `signals`; yields the signals received so far)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # only the main thread may set handlers (e.g. the CLI called from a test thread)
        return

    def handler(signum, _frame) -> None:
        received.append(signum)
        if len(received) > 1:
            raise SystemExit(EXIT_TERMINATED)
        stop()

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name
