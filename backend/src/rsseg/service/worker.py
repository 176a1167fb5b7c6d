"""`rsseg serve`: the service over newline-delimited JSON on stdin/stdout.

stdout belongs to the protocol: at start the real stdout is kept for records and file descriptor
1 is pointed at stderr, so prints and C-level output of torch, GDAL or any library land in stderr
(which the client keeps as the log tail it shows after a crash).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import BinaryIO, TextIO

from ..protocol.messages import MAX_LINE_BYTES, Bye, ErrorRecord, Message, ProtocolError, Shutdown, decode
from ..signals import EXIT_TERMINATED, signal_name, stop_on_signals
from .jobs import Service

UNPARSABLE_ID = "invalid"  # the id of error records answering a line whose id could not be read


def _claim_stdout() -> TextIO:
    """Keep the real stdout for the protocol and send everything else written to fd 1 to stderr."""
    sys.stdout.flush()
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", newline="\n")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


def _lines(stream: BinaryIO):
    """Lines of at most MAX_LINE_BYTES; a longer line yields one over-long marker and is skipped."""
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while True:  # drain the rest of the over-long line
                rest = stream.readline(MAX_LINE_BYTES)
                if not rest or rest.endswith(b"\n"):
                    break
        yield line


def serve(stdin: BinaryIO | None = None, stdout: TextIO | None = None) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = stdout if stdout is not None else _claim_stdout()
    lock = threading.Lock()

    def emit(message: Message) -> None:
        with lock:
            out.write(message.encode())
            out.flush()

    service = Service(emit)
    log = logging.getLogger("rsseg.worker")
    log.info("worker %d ready", os.getpid())
    shutdown = None

    def terminate() -> None:
        raise _Terminated()

    try:
        with stop_on_signals(terminate) as received:
            for raw in _lines(stdin if stdin is not None else sys.stdin.buffer):
                if not raw.strip():
                    continue
                try:
                    message = decode(raw)
                except ProtocolError as exc:
                    emit(ErrorRecord(exc.msg_id or UNPARSABLE_ID, "ProtocolError", str(exc)))
                    continue
                if not service.handle(message):
                    shutdown = message
                    break
    except _Terminated:
        log.info("worker %d stopped by %s: cancelling the running job", os.getpid(), signal_name(received[0]))
        service.stop()  # the job removes its staged files before the process goes
        return EXIT_TERMINATED
    service.stop()  # stdin closed (the client went away) or shutdown: cancel and clean up
    if isinstance(shutdown, Shutdown):
        emit(Bye(shutdown.id))
    return 0


class _Terminated(Exception):
    """Raised in the main thread by SIGTERM/SIGHUP to leave the blocking read of stdin."""
