"""The first-run panel: what stops the next run, in one sentence, with the buttons that fix it.

`next_step()` decides (pure, testable): no backend environment yet → "Set up backend…" or "Use an
existing environment…"; the chosen model lacks its weights → "Download" / "Import weights…"; a
referring model without its trained checkpoint → "Choose checkpoint…" (also beside "Download" for a model that
needs both). Nothing missing: hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from qgis.PyQt.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from .model_picker import needs_checkpoint, state_of, state_words

ACTIONS = {"setup": "Set up backend…", "python": "Use an existing environment…", "download": "Download",
           "import": "Import weights…", "checkpoint": "Choose checkpoint…", "refresh": "Refresh"}


@dataclass
class Step:
    text: str
    actions: list[str] = field(default_factory=list)  # keys of ACTIONS, the first one is the default


def next_step(python: str, rows: Optional[list[dict]], model: str, checkpoint: str, listing: bool) -> Optional[Step]:
    """What the user must do before Run can work, or None."""
    if not python:
        return Step("The models run in their own Python environment with the rsseg backend, which is not set up "
                    "yet. Set one up here (a few minutes; PyTorch is about 1–3 GB), or choose the Python of an "
                    "environment you already have.", ["setup", "python"])
    if rows is None:
        return Step("Listing the backend's models…" if listing else
                    "The backend's models are not listed yet.", [] if listing else ["refresh"])
    row = next((r for r in rows if r.get("id") == model), None)
    if row is None:
        return None  # a typed id: the backend will say what it is
    state = state_of(row)
    # a referring model that runs only with a trained checkpoint needs one too, besides its weights
    also = needs_checkpoint(row) and state != "test" and not checkpoint
    more, extra = (" It also needs a trained checkpoint (a step-N.json written by training).", ["checkpoint"]) \
        if also else ("", [])
    if state == "download":
        return Step(f"“{model}” needs its weights before it can run ({state_words(row)}).{more}",
                    ["download", "import", *extra])
    if state == "import":
        return Step(f"“{model}” needs its weights file, which has no download address: get it from its publisher "
                    f"and import it.{more}", ["import", *extra])
    if state == "needs checkpoint" and not checkpoint:
        return Step(f"“{model}” finds objects from a sentence only after training: choose a trained checkpoint "
                    "(a step-N.json written by training).", ["checkpoint"])
    return None


class FirstRunPanel(QFrame):
    """Shows a Step: its sentence and one button per action; `act(key)` is called on a press."""

    def __init__(self, act: Callable[[str], None], parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setObjectName("RsRefSegFirstRun")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QVBoxLayout(self)
        self.text = QLabel("", self)
        self.text.setWordWrap(True)
        layout.addWidget(self.text)
        row = QHBoxLayout()
        self.buttons: dict[str, QPushButton] = {}
        for key, label in ACTIONS.items():
            button = QPushButton(label, self)
            button.clicked.connect(lambda _=False, key=key: act(key))
            button.setVisible(False)
            row.addWidget(button)
            self.buttons[key] = button
        row.addStretch(1)
        layout.addLayout(row)
        self.step: Optional[Step] = None
        self.setVisible(False)

    def show_step(self, step: Optional[Step]) -> None:
        self.step = step
        self.setVisible(step is not None)
        if step is None:
            return
        self.text.setText(step.text)
        for key, button in self.buttons.items():
            button.setVisible(key in step.actions)
            button.setDefault(bool(step.actions) and key == step.actions[0])
