"""The plugin's settings (QgsSettings under "rs_refseg/"): where the backend lives, recent prompts.

The backend interpreter is the one setting everything depends on: the Python of the environment
that has the rsseg backend (and torch). "Set up backend" creates one in the QGIS profile folder.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from qgis.core import QgsApplication, QgsSettings

from ..protocol.contracts import DEFAULT_MODELS, MAX_TOP_K
from .setup_backend import venv_python

PREFIX = "rs_refseg/"
RECENT_MAX = 10


def managed_venv() -> Path:
    """The environment "Set up backend" creates: in the active QGIS profile, per user."""
    return Path(QgsApplication.qgisSettingsDirPath()) / "rs_refseg" / "backend-venv"


def default_python() -> str:
    """RSSEG_PYTHON, else the managed environment, else an `rsseg` found on PATH's interpreter."""
    if os.environ.get("RSSEG_PYTHON"):
        return os.environ["RSSEG_PYTHON"]
    managed = venv_python(managed_venv())
    if managed.exists():
        return str(managed)
    found = shutil.which("rsseg")
    if found:
        sibling = Path(found).with_name("python.exe" if sys.platform == "win32" else "python")
        if sibling.exists():
            return str(sibling)
    return ""


@dataclass
class PluginSettings:
    python: str = ""
    recent_classes: list[str] = field(default_factory=list)
    recent_sentences: list[str] = field(default_factory=list)
    model_classes: str = DEFAULT_MODELS["classes"]
    model_sentence: str = DEFAULT_MODELS["sentence"]
    device: str = "auto"
    out_dir: str = ""  # empty: run_folder.default_root() (beside the saved project)
    show_test_models: bool = False
    top_k: int = 1  # objects a sentence returns with a model that finds separate objects

    @classmethod
    def load(cls) -> "PluginSettings":
        s = QgsSettings()
        defaults = cls()
        return cls(python=s.value(PREFIX + "python", "") or default_python(),
                   recent_classes=_list(s.value(PREFIX + "recent_classes", [])),
                   recent_sentences=_list(s.value(PREFIX + "recent_sentences", [])),
                   model_classes=s.value(PREFIX + "model_classes", defaults.model_classes),
                   model_sentence=s.value(PREFIX + "model_sentence", defaults.model_sentence),
                   device=s.value(PREFIX + "device", defaults.device),
                   out_dir=s.value(PREFIX + "out_dir", ""),
                   show_test_models=s.value(PREFIX + "show_test_models", False, type=bool),
                   top_k=_top_k(s.value(PREFIX + "top_k", defaults.top_k)))

    def save(self) -> None:
        s = QgsSettings()
        for key, value in vars(self).items():
            s.setValue(PREFIX + key, value)

    def remember(self, mode: str, prompt: str) -> None:
        recent = self.recent_sentences if mode == "sentence" else self.recent_classes
        if prompt in recent:
            recent.remove(prompt)
        recent.insert(0, prompt)
        del recent[RECENT_MAX:]


def _top_k(value) -> int:
    """A stored top-k as a number of objects from 1 to MAX_TOP_K (1 for anything unreadable)."""
    try:
        return min(max(int(value), 1), MAX_TOP_K)
    except (TypeError, ValueError):
        return 1


def _list(value) -> list[str]:
    if value in (None, ""):
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]
