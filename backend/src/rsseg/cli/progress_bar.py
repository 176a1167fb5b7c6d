"""tqdm progress bars on stderr, one per stage, driven by the engine's progress callback."""

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
