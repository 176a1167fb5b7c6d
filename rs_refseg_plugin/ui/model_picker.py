"""The model list as a GUI user needs it: the user's trained models first ("My models", by their name),
then the others grouped by what each needs before it runs, with a one-line description, and test models
hidden unless asked for. The families one can train (task "trainable") are never offered here: the Train
tab lists them.

Rows are the worker's `models` answer (`rsseg models --json`). Newer backends say each row's
`state`; for older ones it is worked out from the weight files. A referring model that runs only with a
trained checkpoint (`needs_checkpoint`) is listed under "Need a trained checkpoint" whatever its files'
state (its label says the download too), so a sentence's list tells at a glance the models that run without
training (zero-shot, "zero-shot" in their label) from those that need one. A model that finds separate
objects (`instances`: zero-shot referring, SAM 3) says so in its tooltip: the dock then offers top-k.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QStandardItemModel
from qgis.PyQt.QtWidgets import QComboBox

from ..protocol.contracts import task_accepts

# The groups in the order the list shows them: (state, heading); "mine": the bundles a user trained.
GROUPS = (("mine", "My models"), ("ready", "Ready to run"), ("download", "Need a download"),
          ("import", "Need a weights file"), ("needs checkpoint", "Need a trained checkpoint"),
          ("test", "Test models (random weights)"))


def is_test(row: dict) -> bool:
    return bool(row.get("test_model")) or row["id"] == "test" or row["id"].endswith("-tiny")


def state_of(row: dict) -> str:
    """"ready", "download", "import", "needs checkpoint", "component" or "test"."""
    if is_test(row):
        return "test"
    state = row.get("state")
    if state:
        return str(state)
    if row.get("weights_present", True):
        return "ready"
    weights = row.get("weights") or []
    return "download" if any(w.get("urls") or w.get("url") for w in weights) or not weights else "import"


def needs_checkpoint(row: dict) -> bool:
    """A referring model that runs only with a trained checkpoint (the real RSRefSeg entries)."""
    return bool(row.get("needs_checkpoint")) or state_of(row) == "needs checkpoint"


def finds_objects(row: Optional[dict]) -> bool:
    """A model that finds separate objects (one polygon each, with its score and rank): a sentence takes top-k."""
    return bool(row and row.get("instances"))


def zero_shot(row: dict) -> bool:
    """A referring model of the registry that runs without any training (no checkpoint, no bundle)."""
    return row.get("task") in ("sentence", "both") and not needs_checkpoint(row) and not row.get("bundle") \
        and state_of(row) != "test"


def _size(row: dict) -> str:
    size = row.get("download_bytes") or sum(int(w.get("size") or 0) for w in row.get("weights") or [])
    return f" ({size / 2**20:,.0f} MB)" if size else ""


def state_text(row: dict) -> str:
    """What the model needs, in words for the list and the first-run panel."""
    if needs_checkpoint(row) and state_of(row) not in ("needs checkpoint", "test"):
        return f"needs a trained checkpoint; {state_words(row)}"  # and its weights first
    return state_words(row)


def state_words(row: dict) -> str:
    return {"ready": "ready", "download": f"download{_size(row)}", "import": "weights file needed",
            "needs checkpoint": "needs a trained checkpoint", "test": "test model",
            "component": "part of other models"}.get(state_of(row), state_of(row))


def runnable(row: dict) -> bool:
    return bool(row.get("runnable", True)) and state_of(row) not in ("component", "trainable") \
        and row.get("task") != "trainable"


def group_of(row: dict) -> str:
    """The row's group: "mine" for a trained model (a bundle), "needs checkpoint" for a model that runs only
    with one (whatever its files' state), else its state."""
    if row.get("bundle"):
        return "mine"
    state = state_of(row)
    return "needs checkpoint" if state != "test" and needs_checkpoint(row) else state


def model_tooltip(row: dict, mode: str = "sentence") -> str:
    """The row's one-line description, then (for a sentence) what a referring model needs and what it returns."""
    lines = [str(row.get("description") or "").split(". ")[0].rstrip(".")]
    if mode == "sentence":
        if needs_checkpoint(row):
            lines.append("Needs a trained checkpoint (the step-N.json of a training run): Choose checkpoint…")
        elif zero_shot(row):
            lines.append("Zero-shot: runs without training or a checkpoint")
        if finds_objects(row):
            lines.append("Finds separate objects, each its own polygon with its score: choose how many (top-k)")
    return "\n".join(line for line in lines if line)


def visible_rows(rows: list[dict], mode: str, show_test: bool) -> list[dict]:
    """The models that take prompts of `mode`, in GROUPS order; test models only with `show_test`."""
    chosen = [r for r in rows if runnable(r) and task_accepts(r.get("task", ""), mode)
              and (show_test or group_of(r) != "test")]
    order = {state: i for i, (state, _) in enumerate(GROUPS)}
    return sorted(chosen, key=lambda r: order.get(group_of(r), len(order)))


@dataclass
class PickerItem:
    label: str
    model: Optional[str]  # None: a group heading
    tooltip: str = ""


def picker_items(rows: list[dict], mode: str, show_test: bool) -> list[PickerItem]:
    items: list[PickerItem] = []
    heading = None
    for row in visible_rows(rows, mode, show_test):
        group = group_of(row)
        if group != heading:
            heading = group
            items.append(PickerItem(dict(GROUPS).get(group, group.capitalize()), None))
        if group == "mine":
            description = str(row.get("description") or "").split(". ")[0].rstrip(".")
            classes = [str(c) for c in row.get("classes") or []]
            shown = ", ".join(classes[:4]) + (", …" if len(classes) > 4 else "")
            name = str(row.get("name") or row["id"])
            items.append(PickerItem(f"{name} — {shown or 'trained'}", row["id"],
                                    f"{description}\n{row['id']}" if description else row["id"]))
            continue
        kind = ", zero-shot" if mode == "sentence" and zero_shot(row) else ""
        items.append(PickerItem(f"{row['id']} — {state_text(row)}{kind}", row["id"], model_tooltip(row, mode)))
    return items


def fill_combo(combo: QComboBox, items: list[PickerItem], chosen: str) -> None:
    """Headings are disabled items; each model item's data is its id; `chosen` is selected (or typed)."""
    combo.clear()
    model = combo.model()
    for item in items:
        combo.addItem(item.label if item.model else f"— {item.label} —", item.model)
        index = combo.count() - 1
        if item.model is None and isinstance(model, QStandardItemModel):
            model.item(index).setEnabled(False)
        if item.tooltip:
            combo.setItemData(index, item.tooltip, Qt.ItemDataRole.ToolTipRole)
    index = combo.findData(chosen)
    if index >= 0:
        combo.setCurrentIndex(index)
    else:
        combo.setEditText(chosen)
