"""Keep what C libraries print to stderr during a block, to turn it into one clear error.

libtiff reports a full disk by printing "_tiffWriteProc: No space left on device." itself, once per
failed block, and GDAL raises a vague "Write failed" only later (a cached block is flushed on a
later write or on close). Inside `with CapturedStderr():` file descriptor 2 points at a temporary
file; what the blocks print is kept, and `release()` at the end of the job passes it on to the real
stderr unchanged, unless a block failed: then it is the detail of one error message (`text()`).

File descriptor 2 belongs to the whole process, so blocks on different threads (the engine's reader
and writer) take turns: a block holds a lock from start to end, and `quiet()` lets the main thread
print its progress between blocks, never into the capture.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from typing import IO, Optional


class CapturedStderr:
    def __init__(self) -> None:
        self._file: Optional[IO[bytes]] = None
        self._saved: Optional[int] = None
        self._kept = b""
        self.failed = False
        self.quiet = threading.Lock()  # held by every block; hold it to print to stderr between blocks

    def __enter__(self) -> "CapturedStderr":
        self.quiet.acquire()
        try:
            if self._file is None:
                self._file = tempfile.TemporaryFile()
            sys.stderr.flush()
            self._saved = os.dup(2)
            self._file.seek(0)
            self._file.truncate()
            os.dup2(self._file.fileno(), 2)
        except OSError:  # no capture (no temp space, no fd 2): the block runs as it would anyway
            self._saved = None
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._restore(exc_type)
        finally:
            self.quiet.release()

    def _restore(self, exc_type) -> None:
        if self._saved is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._saved = None
        try:
            self._file.seek(0)
            printed = self._file.read()
        except OSError:
            printed = b""
        self._kept += printed
        if exc_type is not None:
            self.failed = True

    @property
    def reported_write_error(self) -> bool:
        """libtiff can print a failed write yet return success to GDAL: the words count as the failure."""
        return any(m in self._kept for m in (b"_tiffWriteProc", b"_tiffSeekProc", b"No space left", b"too large"))

    def text(self) -> str:
        """What was printed during the blocks so far."""
        return self._kept.decode("utf-8", "replace")

    def release(self) -> None:
        """End of the job: pass the printing on to stderr unless a block failed."""
        if self._kept and not self.failed:
            os.write(2, self._kept)
            self._kept = b""
        if self._file is not None:
            self._file.close()
            self._file = None
