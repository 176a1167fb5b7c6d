"""tqdm progress bars on stderr driven by progress callbacks: per stage (jobs) and in bytes (weights)."""

from __future__ import annotations

import sys

from tqdm import tqdm

from ..progress import Progress

LABELS = {"load model": "loading model", "segment": "segmenting tiles", "vectorise": "vectorising"}


class StageBars:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.stage: str | None = None

    def __call__(self, event: Progress) -> None:
        if not self.enabled:
            return
        if event.stage != self.stage:
            self.close()
            self.stage = event.stage
            self.bar = tqdm(total=event.total, desc=LABELS.get(event.stage, event.stage), file=sys.stderr,
                            unit="tile" if event.stage == "segment" else "chunk", leave=True)
        self.bar.total = event.total
        self.bar.n = event.done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.stage = None


class BatchBar:
    """One bar over a batch's rasters; its postfix shows where each running raster is."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar: tqdm | None = None

    def __call__(self, event: Progress) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = tqdm(total=event.total, desc="rasters", unit="raster", file=sys.stderr, leave=True)
        running = event.detail.get("running", {})
        self.bar.set_postfix_str(", ".join(f"{name} {LABELS.get(p['stage'], p['stage'])} {p['done']}/{p['total']}"
                                           for name, p in running.items())[:120], refresh=False)
        self.bar.update(event.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class ByteBar:
    """A tqdm bar in bytes on stderr, restarted when the stage or the file (total) changes."""

    LABELS = {"download": "downloading", "verify": "verifying", "import": "importing"}

    def __init__(self, name: str, enabled: bool = True):
        self.name, self.enabled = name, enabled
        self.bar = None
        self.key: tuple | None = None

    def __call__(self, event) -> None:
        if not self.enabled:
            return
        if self.key != (event.stage, event.total) or (self.bar is not None and event.done < self.bar.n):
            self.close()
            self.key = (event.stage, event.total)
            self.bar = tqdm(total=event.total, desc=f"{self.LABELS.get(event.stage, event.stage)} {self.name}",
                            unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=True)
        self.bar.update(event.done - self.bar.n)  # update(), not refresh(): tqdm throttles redraws

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.key = None, None
