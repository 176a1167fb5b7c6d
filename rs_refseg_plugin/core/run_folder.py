"""Where a run's outputs go: a new sub-folder per run, never a folder with loaded outputs.

With no folder chosen, outputs go beside the saved project (`<project folder>/rs_refseg_outputs`),
or, while the project is unsaved, to the profile's `rs_refseg/outputs`: never the system temporary
folder, which a saved project would then point into. Each run writes into
`<root>/<date-time> <prompt>`, so a second run never overwrites the files of a first one whose
layers are still loaded.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from qgis.core import QgsApplication, QgsProject

from .summary import short

PROJECT_FOLDER = "rs_refseg_outputs"


def default_root(project: QgsProject | None = None) -> Path:
    """The folder runs go to when the user chose none."""
    project = project or QgsProject.instance()
    saved = project.absoluteFilePath()
    if saved:
        return Path(saved).parent / PROJECT_FOLDER
    return Path(QgsApplication.qgisSettingsDirPath()) / "rs_refseg" / "outputs"


def _slug(prompt: str) -> str:
    """A prompt as part of a folder name: letters, digits, spaces, dashes; at most 40 characters."""
    cleaned = re.sub(r"[^\w\- ]+", " ", short(prompt, 40).rstrip("…"), flags=re.UNICODE)
    return " ".join(cleaned.split())[:40].strip() or "run"


def new_run_folder(root: str | Path, prompt: str, now: float | None = None) -> Path:
    """Create and return `<root>/<YYYY-MM-DD HHMMSS> <prompt>` (with " 2", " 3"... if taken)."""
    root = Path(root)
    stamp = time.strftime("%Y-%m-%d %H%M%S", time.localtime(now))
    base = f"{stamp} {_slug(prompt)}"
    for n in range(1, 1000):
        folder = root / (base if n == 1 else f"{base} {n}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"no free run folder name under {root} for {base!r}")
