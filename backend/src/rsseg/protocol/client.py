"""Talk to the backend: a worker subprocess (WorkerClient) or, in the backend, the same service in-process.

Standard library only: the QGIS plugin uses this module and never imports torch. The worker keeps
torch, CUDA and its own numpy out of QGIS's Python; when it crashes (even `kill -9` mid-job) the
caller gets a WorkerCrashed carrying the tail of the worker's stderr, and the next request starts a
fresh worker. One job at a time per session: a second concurrent request raises WorkerBusy, or waits
for its turn when the caller passes `wait`.
"""

from __future__ import annotations

import collections
import queue
import signal
import subprocess  # nosec B404  # only to wait for and stop the worker started by launch.start
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .contracts import with_fixes
from .launch import start
from .messages import (
    PROTOCOL_VERSION,
    Batch,
    Bye,
    Cancel,
    Doctor,
    Download,
    EncodeError,
    ErrorRecord,
    ImportWeights,
    ListModels,
    Message,
    Ping,
    Pong,
    ProgressRecord,
    ProtocolError,
    ResultRecord,
    Segment,
    Shutdown,
    Train,
    decode,
)

ProgressHandler = Callable[[ProgressRecord], None]
Stop = Callable[[], bool]  # polled while waiting for the running job: True gives up the wait
STDERR_TAIL_LINES = 40


class BackendError(Exception):
    """Base class of everything the client raises; `str()` is a message fit for the user, without commands.

    `fixes` (names of contracts.FIXES) and `subject` (usually a model id) say what the user can do about
    it; `text(front_end)` words them for the CLI ("cli": commands) or the QGIS plugin ("gui": the dock's
    buttons), so a message box never tells a QGIS user to type a command.
    """

    code = "BackendError"
    fixes: tuple[str, ...] = ()
    subject = ""

    def text(self, front_end: str = "gui") -> str:
        """The message with its fixes in `front_end`'s words ("gui" or "cli")."""
        return with_fixes(str(self), self.fixes, self.subject, front_end)


class JobFailed(BackendError):
    """The worker answered with an error record: bad input, missing weights, internal error...

    `.code`, `.detail`, and the record's `.fixes` and `.subject` (see BackendError.text)."""

    def __init__(self, record: ErrorRecord):
        super().__init__(record.message)
        self.code = record.code
        self.detail = record.detail
        self.fixes = tuple(record.fixes)
        self.subject = record.subject


class JobCancelled(JobFailed):
    """The job stopped because it was cancelled; the worker removed its partial outputs."""


class InvalidRequest(BackendError):
    """A request this client cannot send (NaN or infinity in a field, a value JSON cannot carry)."""

    code = "ProtocolError"


class WorkerBusy(BackendError):
    code = "Busy"


class WorkerStartError(BackendError):
    code = "WorkerStartError"

    def __init__(self, message: str, fixes: tuple[str, ...] = ()):
        super().__init__(message)
        self.fixes = fixes


class WorkerCrashed(BackendError):
    code = "WorkerCrashed"

    def __init__(self, message: str, stderr_tail: str = ""):
        super().__init__(f"{message}\n--- last lines of the worker's log ---\n{stderr_tail}" if stderr_tail
                         else message)
        self.stderr_tail = stderr_tail


class WorkerTimeout(WorkerCrashed):
    code = "WorkerTimeout"


class _Exited:
    """Put in the inbox by the reader when the worker's stdout closes."""


def _payload(request: Any, kind: str, contract: str) -> dict[str, Any]:
    """A request dataclass (or its dict) as the record's dict."""
    try:
        return request.to_dict() if hasattr(request, "to_dict") else dict(request)
    except (TypeError, ValueError):
        raise InvalidRequest(f"a {kind} request is a {contract} or a dict, got {type(request).__name__}") from None


def _new_id() -> str:
    return uuid.uuid4().hex[:12]


class Session:
    """The request/answer logic shared by the worker client and the in-process runner.

    Subclasses deliver records with `_send` and put every answer (decoded records) in `_inbox`.
    """

    def __init__(self, idle_timeout: float = 600.0):
        self.idle_timeout = idle_timeout  # longest silence (no progress either) before giving up
        self._inbox: queue.Queue = queue.Queue()
        self._busy = threading.Lock()
        self._current: Optional[str] = None

    # -- public interface ---------------------------------------------------------------------------
    def ping(self, timeout: Optional[float] = None, wait: Optional[Stop] = None) -> dict[str, Any]:
        """Round trip: the worker's protocol, version and pid, plus `rtt_s` measured here."""
        t0 = time.perf_counter()
        pong = self._call(Ping(_new_id()), None, timeout, wait)
        return {"protocol": pong.protocol, "version": pong.version, "pid": pong.pid,
                "rtt_s": time.perf_counter() - t0}

    def segment(self, request: Any, on_progress: Optional[ProgressHandler] = None,
                timeout: Optional[float] = None, wait: Optional[Stop] = None) -> dict[str, Any]:
        """Run a SegmentRequest (dataclass or dict); returns the result record as a dict.

        With `wait`, a request made while another job runs waits its turn (polling `wait`, which gives
        up by returning True); without it, it raises WorkerBusy at once."""
        return self._call(Segment(_new_id(), _payload(request, "segment", "SegmentRequest")), on_progress, timeout,
                          wait).result

    def train(self, request: Any, on_progress: Optional[ProgressHandler] = None,
              timeout: Optional[float] = None, wait: Optional[Stop] = None) -> dict[str, Any]:
        """Train from layers (a TrainLayersRequest or its dict); progress per epoch with loss and IoU in
        `detail`. Returns {"model", "bundle", "metrics", ...}; `timeout` is the longest silence."""
        return self._call(Train(_new_id(), _payload(request, "train", "TrainLayersRequest")), on_progress, timeout,
                          wait).result

    def batch(self, request: Any, on_progress: Optional[ProgressHandler] = None,
              timeout: Optional[float] = None, wait: Optional[Stop] = None) -> dict[str, Any]:
        """Segment many rasters on Ray workers (a BatchRequest or its dict); progress in rasters ended, `detail`
        with the running ones. Returns the BatchResult dict (a row per raster, as its manifest.json)."""
        return self._call(Batch(_new_id(), _payload(request, "batch", "BatchRequest")), on_progress, timeout,
                          wait).result

    def download(self, model: str, on_progress: Optional[ProgressHandler] = None,
                 timeout: Optional[float] = None, wait: Optional[Stop] = None) -> dict[str, Any]:
        """Fetch a model's weight files; progress is bytes over all of them. Returns {"model", "files"}."""
        return self._call(Download(_new_id(), model), on_progress, timeout, wait).result

    def import_weights(self, model: str, file: str, on_progress: Optional[ProgressHandler] = None,
                       timeout: Optional[float] = None, wait: Optional[Stop] = None) -> dict[str, Any]:
        """Copy a weights file downloaded elsewhere into place for `model` (size and sha256 checked)."""
        return self._call(ImportWeights(_new_id(), model, file), on_progress, timeout, wait).result

    def doctor(self, timeout: Optional[float] = None, wait: Optional[Stop] = None) -> dict[str, Any]:
        """The backend's environment report {"report", "markdown"}, with this round trip in it."""
        ping = self.ping(timeout, wait)
        worker = {"ok": True, "protocol": ping["protocol"], "pid": ping["pid"],
                  "ping_ms": round(ping["rtt_s"] * 1000, 2), **self._started()}
        return self._call(Doctor(_new_id(), worker), None, timeout, wait).result

    def models(self, timeout: Optional[float] = None, wait: Optional[Stop] = None) -> list[dict[str, Any]]:
        return self._call(ListModels(_new_id()), None, timeout, wait).result["models"]

    def cancel(self) -> bool:
        """Ask the running job to stop at its next batch; False when nothing is running."""
        target = self._current
        if target is None:
            return False
        self._send(Cancel(_new_id(), target))
        return True

    @property
    def busy(self) -> bool:
        return self._busy.locked()

    def close(self) -> None:
        """Release the backend (subclasses stop the worker)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- shared machinery ---------------------------------------------------------------------------
    def _send(self, message: Message) -> None:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Make sure the backend can take a request (the worker client starts a worker)."""

    def _on_lost(self, reason: str, timed_out: bool) -> BackendError:
        raise NotImplementedError

    def _started(self) -> dict[str, Any]:
        """What is known of the backend's start (the worker client: seconds to its handshake)."""
        return {}

    def _take_turn(self, wait: Optional[Stop]) -> None:
        """The session's one job lock: taken at once, or (with `wait`) when the running job ends."""
        if wait is None:
            if not self._busy.acquire(blocking=False):
                raise WorkerBusy("the backend is already running a job; wait for it to finish or cancel it")
            return
        given_up = JobCancelled(ErrorRecord("", "Cancelled", "cancelled while waiting for the running job"))
        while not self._busy.acquire(timeout=0.25):
            if wait():
                raise given_up
        if wait():
            self._busy.release()
            raise given_up

    def _call(self, message: Message, on_progress: Optional[ProgressHandler], timeout: Optional[float],
              wait: Optional[Stop] = None):
        try:  # before anything starts: a record that cannot be encoded would never be answered
            message.encode()
        except EncodeError as exc:
            raise InvalidRequest(f"the request cannot be sent: {exc.where}") from None
        self._take_turn(wait)
        try:
            self._prepare()
            self._current = message.id
            self._send(message)
            return self._await(message.id, on_progress, timeout or self.idle_timeout)
        finally:
            self._current = None
            self._busy.release()

    def _await(self, msg_id: str, on_progress: Optional[ProgressHandler], timeout: float):
        while True:
            try:
                record = self._inbox.get(timeout=timeout)
            except queue.Empty:
                raise self._on_lost(f"the backend sent nothing for {timeout:.0f} s", timed_out=True) from None
            if isinstance(record, _Exited):
                raise self._on_lost("the backend worker stopped unexpectedly", timed_out=False)
            if record.id != msg_id:
                continue  # a late answer to an earlier, abandoned request
            if isinstance(record, ProgressRecord):
                if on_progress is not None:
                    on_progress(record)
            elif isinstance(record, ErrorRecord):
                raise (JobCancelled if record.code == "Cancelled" else JobFailed)(record)
            elif isinstance(record, (ResultRecord, Pong, Bye)):
                return record


@dataclass
class WorkerConfig:
    """How to start the worker: the backend environment's interpreter and its environment."""

    python: str
    args: tuple[str, ...] = ("-m", "rsseg", "serve")
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment
    drop_env: tuple[str, ...] = ()  # removed from it (launch.FOREIGN_PYTHON_ENV when started from QGIS)
    start_timeout: float = 120.0  # the first import of torch can be slow on a cold disk
    idle_timeout: float = 600.0
    stop_grace: float = 5.0  # seconds a timed-out worker gets to cancel and clean up before SIGKILL
    log: Optional[Callable[[str], None]] = None  # receives each stderr line of the worker


class WorkerClient(Session):
    """Starts `python -m rsseg serve` on first use, handshakes, and restarts it after a crash."""

    def __init__(self, config: WorkerConfig):
        super().__init__(config.idle_timeout)
        self.config = config
        self._proc: Optional[subprocess.Popen] = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._write_lock = threading.Lock()
        self.worker_info: dict[str, Any] = {}

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)

    def start(self) -> dict[str, Any]:
        """Start the worker and handshake now (normally done by the first request)."""
        if not self._busy.acquire(blocking=False):
            raise WorkerBusy("the backend is already running a job")
        try:
            self._prepare()
            return self.worker_info
        finally:
            self._busy.release()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                self._write(proc, Shutdown(_new_id()))
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    # -- Session hooks -----------------------------------------------------------------------------
    def _prepare(self) -> None:
        if self.running:
            return
        self.close()  # reap a dead worker
        started = time.perf_counter()
        self._spawn()
        try:
            pong = self._await_handshake()
        except BackendError:
            self._kill()
            raise
        if pong.protocol != PROTOCOL_VERSION:
            self._kill()
            raise WorkerStartError(f"the backend at {self.config.python} speaks protocol {pong.protocol}, this "
                                   f"client speaks {PROTOCOL_VERSION}: update the backend and the plugin together")
        self.worker_info = {"protocol": pong.protocol, "version": pong.version, "pid": pong.pid,
                            "start_s": round(time.perf_counter() - started, 3)}

    def _started(self) -> dict[str, Any]:
        return {"start_s": self.worker_info["start_s"]} if "start_s" in self.worker_info else {}

    def _send(self, message: Message) -> None:
        proc = self._proc
        if proc is None:
            raise WorkerCrashed("the backend worker is not running")
        try:
            self._write(proc, message)
        except OSError:
            pass  # the reader sees the exit and the waiting request reports it with the stderr tail

    def _on_lost(self, reason: str, timed_out: bool) -> BackendError:
        proc = self._proc
        if timed_out:
            self._kill(self.config.stop_grace)
        elif proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._kill()
        code = proc.returncode if proc is not None else None
        how = ""
        if code is not None and code < 0:
            try:
                how = f" (killed by {signal.Signals(-code).name})"
            except ValueError:
                how = f" (signal {-code})"
        elif code is not None:
            how = f" (exit code {code})"
        self._kill()
        cls = WorkerTimeout if timed_out else WorkerCrashed
        return cls(f"{reason}{how}; the next request starts a fresh worker", self.stderr_tail)

    # -- process plumbing --------------------------------------------------------------------------
    def _spawn(self) -> None:
        self._inbox = queue.Queue()
        self._stderr.clear()
        try:
            proc = start([self.config.python, *self.config.args], self.config.drop_env, self.config.env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise WorkerStartError(f"cannot start the backend interpreter {self.config.python!r}: "
                                   f"{exc.strerror or exc}; set the backend's Python in the settings") from None
        self._proc = proc
        inbox = self._inbox
        threading.Thread(target=self._read_stdout, args=(proc, inbox), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(proc,), daemon=True).start()

    def _await_handshake(self) -> Pong:
        ping = Ping(_new_id())
        self._send(ping)
        try:
            record = self._await(ping.id, None, self.config.start_timeout)
        except (WorkerCrashed, JobFailed) as exc:
            tail = getattr(exc, "stderr_tail", "")
            missing = "No module named" in tail
            hint = " (the backend is not installed in that environment)" if missing else ""
            raise WorkerStartError(f"the backend at {self.config.python!r} did not start{hint}: "
                                   f"{str(exc).splitlines()[0]}" + (f"\n{tail}" if tail else ""),
                                   ("setup",) if missing else ()) from None
        return record

    def _write(self, proc: subprocess.Popen, message: Message) -> None:
        with self._write_lock:
            proc.stdin.write(message.encode())
            proc.stdin.flush()

    def _read_stdout(self, proc: subprocess.Popen, inbox: queue.Queue) -> None:
        for line in proc.stdout:
            if not line.strip():
                continue
            try:
                inbox.put(decode(line))
            except ProtocolError as exc:
                self._stderr.append(f"[client] ignored an invalid line from the worker: {exc}")
        inbox.put(_Exited())

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            line = line.rstrip("\n")
            self._stderr.append(line)
            if self.config.log is not None:
                try:
                    self.config.log(line)
                except Exception:  # noqa: BLE001 - a failing log sink must not kill the reader  # nosec B110
                    pass

    def _kill(self, grace: float = 0.0) -> None:
        """SIGTERM first when there is a grace period: the worker then cancels its job, which removes
        its staged files, and exits; SIGKILL if it does not within `grace` seconds."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        if grace > 0:
            proc.terminate()
            try:
                proc.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                pass
        proc.kill()
        proc.wait()
