"""`rsseg batch` on Ray: a warm model worker (actor) per GPU or CPU slot, one raster per worker at a time.

Each raster is one ordinary job (the service's path), so a raster has one writer and the engine's own
guarantees hold per raster: staged files, nothing partial. The driver here only schedules: it hands the next
raster to an idle worker, retries a raster whose worker died (or failed unexpectedly) on a fresh worker,
records every ending in the manifest, and on cancel asks the running workers to stop and waits for their
clean-up. docs/batch.md has the user's side.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Optional

import rasterio

from ...errors import BatchError, RssegError, request_rules
from ...models.registry import get_spec
from ...progress import CancelToken, ProgressCallback, report
from ...protocol.batch import DONE, PENDING, BatchRequest, BatchResult
from ...protocol.contracts import OUTPUTS, SegmentRequest
from ...raster.outputs import remove_stale
from ...raster.parts import PART_FOLDER, part_folder, split_rows
from ...raster.writer import BLOCK
from .inputs import plan
from .manifest import BatchLog
from .worker import SegmentWorker

POLL_SECONDS = 0.5  # how often the driver looks at finished rasters, progress and cancel
CANCEL_GRACE_SECONDS = 120.0  # after a cancel, how long a worker may take to clean up before it is stopped
LOCAL_OBJECT_STORE = 128 * 1024 * 1024  # bytes: only small records travel through Ray, never rasters
RAY_START_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"  # the logger of that notice
CONNECT_SECONDS = 5.0  # a cluster address that does not answer within this is refused


def import_ray():
    try:
        import ray
    except ImportError:
        raise BatchError("Ray is not installed in the backend's environment (the backend's batch extra), so it "
                         "cannot run a batch", fixes=("setup",)) from None
    return ray


@contextmanager
def ray_session(ray, address: Optional[str]) -> Iterator[str]:
    """Ray as the caller left it when it is running; else a local one, or the cluster at `address` (or at
    RAY_ADDRESS), shut down afterwards. Yields where it runs."""
    if ray.is_initialized():
        yield "this process's Ray"
        return
    target = address or os.environ.get("RAY_ADDRESS") or None
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if target is None:
        options["object_store_memory"] = LOCAL_OBJECT_STORE
        # Ray announces on every start that a local cluster has token authentication on (its safe default): news
        # for someone running Ray, noise on each batch of ours, which starts and stops that cluster itself
        logging.getLogger(RAY_START_NOTICE_LOGGER).setLevel(logging.ERROR)
    else:
        _check_reachable(target)
    try:
        ray.init(address=target, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BatchError(f"cannot start Ray {'at ' + target if target else 'on this machine'}: {exc}") from None
    try:
        yield target or "local"
    finally:
        ray.shutdown()


def _check_reachable(target: str) -> None:
    """Refuse at once an address where nothing listens: Ray itself retries a dead address for minutes."""
    host, _, port = target.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", or a form Ray reads itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise BatchError(f"no Ray cluster answers at {target} ({exc.strerror or exc}): check the address and that "
                         "Ray runs on that machine, or give no address to run on this computer") from None


def placement(ray, request: BatchRequest) -> tuple[int, dict[str, float]]:
    """How many workers and what each takes: one per GPU where the cluster has GPUs (unless the device is the
    CPU), else one; the CPUs are shared out, so each worker's torch uses its share of the threads."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    on_gpu = gpus > 0 and request.settings.device != "cpu"
    workers = request.workers or (gpus if on_gpu else 1)
    share = cpus // workers if workers <= cpus else cpus / workers
    if on_gpu:
        return workers, {"num_gpus": min(1.0, gpus / workers), "num_cpus": min(1.0, share)}
    return workers, {"num_cpus": share}


@dataclass(frozen=True)
class _Task:
    """What a worker runs: a raster whole, one part of a split raster (`rows`), or the merge of its parts."""

    row: int
    part: Optional[int] = None  # the part's index in the raster's split
    merge: bool = False


@dataclass
class _Slot:
    """A worker and the task it runs (None: idle)."""

    actor: Any
    where_ref: Any  # the object ref of actor.where(): "host:pid", read when first needed
    where: str = ""
    task: Optional[_Task] = None
    ref: Any = None
    started: float = 0.0

    @property
    def row(self) -> Optional[int]:
        return None if self.task is None else self.task.row


class _Scheduler:
    """The driver's loop: rasters to idle workers, endings into the log, retries on fresh workers, cancel."""

    def __init__(self, ray, requests: list, todo: list[int], log: BatchLog, retries: int,
                 resources: dict[str, float], workers: int, progress: Optional[ProgressCallback], cancel: CancelToken,
                 splits: Optional[dict[int, list[tuple[int, int]]]] = None):
        self.ray, self.requests, self.log, self.retries = ray, requests, log, retries
        self.progress, self.cancel = progress, cancel
        self.actor_class = ray.remote(SegmentWorker).options(max_concurrency=3, **resources)
        self.slots = [self._spawn() for _ in range(workers)]
        self.splits = splits or {}  # row -> the rows of each part, for rasters split across workers
        self.parts: dict[int, dict[int, dict[str, Any]]] = {i: {} for i in self.splits}  # finished parts' results
        self.tries: dict[_Task, int] = {}
        self.first_start: dict[int, float] = {}
        self.pending: deque[_Task] = deque(
            task for i in todo for task in ([_Task(i, k) for k in range(len(self.splits[i]))] if i in self.splits
                                            else [_Task(i)]))
        self.cancelled_at: Optional[float] = None
        self.existing = {r.out_dir for r in requests if Path(r.out_dir).exists()}  # never removed here

    def _spawn(self) -> _Slot:
        actor = self.actor_class.remote()
        return _Slot(actor, actor.where.remote())

    def _where(self, slot: _Slot) -> str:
        if not slot.where:
            try:
                slot.where = self.ray.get(slot.where_ref, timeout=5)
            except self.ray.exceptions.RayError:  # a worker that died before saying where it ran
                return ""
        return slot.where

    def run(self) -> None:
        try:
            while self.pending or self._busy():
                try:
                    self._step()
                except (KeyboardInterrupt, SystemExit):  # Ctrl-C cancels like the Cancel button; after a
                    if self.cancelled_at is not None:   # cancel, it (or a second signal) stops at once
                        self._stop_workers("was stopped by a second signal")
                        raise
                    self.cancel.cancel()
            self._report()  # the last endings
        finally:
            for slot in self.slots:
                self.ray.kill(slot.actor)
            for request, row in zip(self.requests, self.log.rows):
                if row.status != DONE:
                    _clean(request.out_dir, remove_folder=request.out_dir not in self.existing)

    def _busy(self) -> list[_Slot]:
        return [s for s in self.slots if s.task is not None]

    def _step(self) -> None:
        if self.cancel.cancelled and self.cancelled_at is None:
            self._start_cancel()
        while self.cancelled_at is not None and self.pending:  # nothing starts after a cancel: neither a raster
            self._fail(self.pending.popleft().row,  # nor the merge of parts that ended before it reached them
                       {"code": "Cancelled", "message": "cancelled before it started"})
        if self.cancelled_at is not None and time.monotonic() - self.cancelled_at > CANCEL_GRACE_SECONDS:
            self._stop_workers(f"did not stop within {CANCEL_GRACE_SECONDS:.0f} s of the cancel")
            return
        for slot in self.slots:
            if slot.task is None and self.pending:
                self._start(slot, self.pending.popleft())
        self._report()  # before the wait, so that every task is reported running at least once
        busy = {slot.ref: slot for slot in self._busy()}
        if busy:  # back at the first ending, so that an idle worker takes the next task at once
            ready, waiting = self.ray.wait(list(busy), num_returns=1, timeout=POLL_SECONDS)
            if ready and waiting:
                ready += self.ray.wait(waiting, num_returns=len(waiting), timeout=0)[0]
            for ref in ready:
                self._finish(busy[ref])

    def _start(self, slot: _Slot, task: _Task) -> None:
        self.tries[task] = self.tries.get(task, 0) + 1
        row = self.log.rows[task.row]
        row.attempts = max(row.attempts, self.tries[task])
        request = self.requests[task.row]
        if task.merge:
            parts = self.parts[task.row]
            slot.ref = slot.actor.merge.remote(request.to_dict(), [parts[k] for k in range(len(parts))])
        elif task.part is not None:
            part = replace(request, out_dir=part_folder(request.out_dir, task.part), vectorise=False,
                           write_scores=False)
            slot.ref = slot.actor.run.remote(part.to_dict(), self.splits[task.row][task.part])
        else:
            slot.ref = slot.actor.run.remote(request.to_dict())
        slot.task, slot.started = task, time.monotonic()
        self.first_start.setdefault(task.row, slot.started)

    def _finish(self, slot: _Slot) -> None:
        task = slot.task
        i = task.row  # a split raster's time runs from its first part's start
        seconds = time.monotonic() - (self.first_start[i] if i in self.splits else slot.started)
        exceptions = self.ray.exceptions
        try:
            answer = self.ray.get(slot.ref)
        except exceptions.RayActorError as exc:  # the process went: a crash, out of memory, a node lost
            where = self._where(slot)
            self.slots[self.slots.index(slot)] = self._spawn()
            self._retry_or_fail(task, {"code": "WorkerDied", "message": f"its worker {where} stopped while running "
                                       f"it ({_first_line(exc)})"}, seconds, where)
            return
        except exceptions.RayTaskError as exc:  # an unexpected error in the job: worth another try
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
            self._retry_or_fail(task, {"code": "InternalError", "message": f"internal error: {type(cause).__name__}: "
                                       f"{_first_line(cause)}"}, seconds, self._where(slot))
        else:
            if "error" in answer:
                self._fail(i, answer["error"], seconds, self._where(slot))
            elif task.part is None:
                self.log.done(i, answer["result"], seconds, self._where(slot))
            elif self.log.rows[i].status == PENDING:  # a part; with all of them done, their merge is next
                self.parts[i][task.part] = answer["result"]
                if len(self.parts[i]) == len(self.splits[i]):
                    self.pending.appendleft(_Task(i, merge=True))
        slot.task = slot.ref = None

    def _retry_or_fail(self, task: _Task, error: dict[str, Any], seconds: float, where: str) -> None:
        if self.tries[task] <= self.retries and self.cancelled_at is None and self.log.rows[task.row].status == PENDING:
            logging.getLogger("rsseg.batch").warning("%s: %s; trying again", self.requests[task.row].raster,
                                                     error["message"])
            self.pending.appendleft(task)
            return
        if self.cancelled_at is not None:
            error = {"code": "Cancelled", "message": "cancelled; its partial outputs were removed"}
        self._fail(task.row, error, seconds, where)

    def _fail(self, i: int, error: dict[str, Any], seconds: float = 0.0, where: str = "") -> None:
        """A raster ends failed (or cancelled); the other parts of a split one still waiting are dropped."""
        if self.log.rows[i].status != PENDING:  # a part of a raster that already ended
            return
        self.pending = deque(task for task in self.pending if task.row != i)
        self.log.failed(i, error, seconds, where)

    def _start_cancel(self) -> None:
        self.cancelled_at, self.log.cancelled = time.monotonic(), True
        for slot in self._busy():
            slot.actor.cancel.remote()

    def _stop_workers(self, why: str) -> None:
        """Stop busy workers outright, then remove what their jobs staged (their processes are gone)."""
        for slot in self._busy():
            self.ray.kill(slot.actor)
        deadline = time.monotonic() + 10
        for slot in self._busy():
            try:
                self.ray.get(slot.ref, timeout=max(0.1, deadline - time.monotonic()))
            except self.ray.exceptions.RayError:  # killed: the ref ends with the worker's death
                pass
            self._fail(slot.row, {"code": "Cancelled", "message": f"cancelled: its worker {why}; its partial "
                                  "outputs were removed"})
            slot.task = slot.ref = None

    def _report(self) -> None:
        running = {}
        for slot in self._busy():
            try:
                stage, done, total = self.ray.get(slot.actor.progress.remote(), timeout=5)
            except self.ray.exceptions.RayError:  # a dying worker: its ending is handled by _finish
                continue
            name = Path(self.requests[slot.row].raster).name
            if slot.task.part is not None:
                name = f"{name} (part {slot.task.part + 1} of {len(self.splits[slot.row])})"
            running[name] = {"stage": stage, "done": done, "total": total, "worker": self._where(slot)}
        ended = sum(row.status != "pending" for row in self.log.rows)
        report(self.progress, "batch", ended, len(self.log.rows),
               {"running": running, "failed": sum(row.status == "failed" for row in self.log.rows)})


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _clean(out_dir: str, remove_folder: bool) -> None:
    """Remove what a stopped worker staged in the folder of a raster that did not finish (its process is gone),
    and the folder, which the batch made, when that leaves it empty."""
    folder = Path(out_dir)
    if folder.is_dir():
        shutil.rmtree(folder / PART_FOLDER, ignore_errors=True)  # the parts of a split raster
        remove_stale(folder)
        if not remove_folder:
            return
        try:
            folder.rmdir()  # only when empty: earlier outputs and the user's files stay
        except OSError:
            pass


def run_batch(request: BatchRequest, progress: Optional[ProgressCallback] = None,
              cancel: Optional[CancelToken] = None) -> BatchResult:
    """Segment every raster of `request`; the result (and the manifest) has a row per raster. A cancelled batch
    returns too (result.cancelled): rasters that ended keep their outputs, the others have none."""
    with request_rules():
        request.validate()
    requests = plan(request)  # every raster checked before a worker starts
    kept = {i: found for i, r in enumerate(requests) if request.skip_done and (found := earlier_result(r))}
    todo = [i for i in range(len(requests)) if i not in kept]
    cancel = cancel or CancelToken()
    if not todo:  # nothing to segment: no Ray to start
        log = BatchLog(request.out_dir, requests, 0, "none")
        _keep(log, kept)
        return log.finish()
    ray = import_ray()
    with ray_session(ray, request.address) as where:
        workers, resources = placement(ray, request)
        log = BatchLog(request.out_dir, requests, workers, where)
        _keep(log, kept)
        log.save()
        try:
            splits = {i: split_rows(height, workers) for i in todo
                      if workers > 1 and (height := _split_height(requests[i], request.split_mpx))}
            _Scheduler(ray, requests, todo, log, request.retries, resources, workers, progress, cancel, splits).run()
        finally:
            result = log.finish()
    return result


def _split_height(request: SegmentRequest, split_mpx: float) -> Optional[int]:
    """The height of a raster to split by rows, None to run it whole: one too small, or a job whose grid is not the
    file's (a region, another resolution) or whose model looks at objects or at the whole region."""
    if not split_mpx or request.sentence is not None or request.resolution is not None or request.region.bbox \
            or request.region.polygons:
        return None
    try:
        if get_spec(request.model).instances:
            return None
        with rasterio.open(request.raster) as dataset:
            height, width = dataset.height, dataset.width
    except (RssegError, rasterio.errors.RasterioIOError):  # the job itself says what is wrong
        return None
    return height if height * width >= split_mpx * 1e6 and height >= 2 * BLOCK else None


def earlier_result(request: SegmentRequest) -> Optional[dict[str, Any]]:
    """The result record of an earlier job in the raster's folder made with the same settings (the device
    aside: the record holds the one it resolved), whose outputs are all there; None otherwise."""
    try:
        result = json.loads((Path(request.out_dir) / OUTPUTS["result"]).read_text(encoding="utf-8"))
        earlier = dict(result["request"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    wanted = json.loads(json.dumps(request.to_dict()))  # tuples as the record's lists
    same = {k: v for k, v in earlier.items() if k != "device"} == {k: v for k, v in wanted.items() if k != "device"}
    outputs = [result.get(k) for k in ("mask", "polygons", "scores") if result.get(k)]
    return result if same and outputs and all(Path(p).is_file() for p in outputs) else None


def _keep(log: BatchLog, kept: dict[int, dict[str, Any]]) -> None:
    for i, result in kept.items():
        log.done(i, result, 0.0, "", kept=True)
