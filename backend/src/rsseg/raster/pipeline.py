"""The engine's worker threads: tiles read ahead of the model, finished rows written behind it.

Why threads: a job is read -> model -> blend -> decide -> write, and run one after another the
model waits on GDAL and GDAL on numpy. GDAL's reads and writes and numpy's array operations let go
of the GIL, so a reader thread (with its own dataset handle: a GDAL handle is not shared between
threads) and a writer thread keep both cores busy while the main thread runs the model and blends.
The queues between them are bounded (a few tiles ahead, a few row blocks behind), so memory stays
bounded by the tile size, as before. An error on a worker thread is raised on the main thread at
its next hand-over; `close()` stops both threads and waits for them, so nothing is written after a
job failed or was cancelled.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable, Optional

_END = object()
_POLL_S = 0.1  # how often a blocked hand-over looks whether the other side stopped


class _Worker:
    """A thread and a bounded queue; the first exception of the thread is kept for the main thread."""

    def __init__(self, name: str, depth: int):
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stopped = threading.Event()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._guarded, name=name, daemon=True)

    def _guarded(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            self.error = exc
            self.stopped.set()

    def run(self) -> None:
        raise NotImplementedError

    def _put(self, item: Any) -> bool:
        """Put unless stopped; False once the other side stopped listening."""
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def stop(self) -> None:
        self.stopped.set()
        while self.thread.is_alive():
            try:  # a thread blocked on a full queue gets room and sees the stop
                self.queue.get_nowait()
            except queue.Empty:
                pass
            self.thread.join(_POLL_S)


class ReadAhead(_Worker):
    """Yields `read(tile)` for each tile in order, computed on a worker thread up to `depth` tiles ahead.

    `open_reader()` runs on the worker thread and returns the reader: its `read(tile)`, then its `close()`."""

    def __init__(self, tiles: Iterable[Any], open_reader: Callable[[], Any], depth: int):
        super().__init__("rsseg-read", depth)
        self._tiles, self._open = list(tiles), open_reader
        self.thread.start()

    def run(self) -> None:
        reader = self._open()
        try:
            for tile in self._tiles:
                if not self._put((tile, reader.read(tile))):
                    return
            self._put(_END)
        finally:
            reader.close()

    def next(self) -> tuple[Any, Any]:
        """(tile, what read returned) for the next tile; raises what the reader raised."""
        while True:
            try:
                item = self.queue.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if self.error is None and self.thread.is_alive():
                    continue
            if self.error is not None:
                raise self.error
            raise RuntimeError("the tile reader stopped without a result")
        if item is _END:
            raise RuntimeError("more tiles asked for than were planned")
        return item


class WriteBehind(_Worker):
    """Calls `write(*item)` for each item put, in order, on a worker thread up to `depth` items behind."""

    def __init__(self, write: Callable[..., None], depth: int):
        super().__init__("rsseg-write", depth)
        self._write = write
        self.thread.start()

    def run(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=_POLL_S)
            except queue.Empty:
                if self.stopped.is_set():
                    return
                continue
            if item is _END or self.stopped.is_set():
                return
            self._write(*item)

    def put(self, *item: Any) -> None:
        """Queue one item; raises what the writer raised as soon as it has failed."""
        self._put(item)
        self.check()

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def finish(self) -> None:
        """Wait until everything put is written; raises what the writer raised."""
        self._put(_END)
        while self.thread.is_alive():
            self.thread.join(_POLL_S)
        self.check()
