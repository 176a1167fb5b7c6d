"""The model list as a GUI user needs it: the user's trained models first ("My models", by their name),
then the others grouped by what each needs before it runs, with a one-line description, and test models
hidden unless asked for. The families one can train (task "trainable") are never offered here: the Train
tab lists them.

Rows are the worker's `models` answer (`rsseg models --json`). Newer backends say each row's
`state`; for older ones it is worked out from the weight files.
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


def _size(row: dict) -> str:
    size = row.get("download_bytes") or sum(int(w.get("size") or 0) for w in row.get("weights") or [])
    return f" ({size / 2**20:,.0f} MB)" if size else ""


def state_text(row: dict) -> str:
    """What the model needs, in words for the list and the first-run panel."""
    return {"ready": "ready", "download": f"download{_size(row)}", "import": "weights file needed",
            "needs checkpoint": "needs a trained checkpoint", "test": "test model",
            "component": "part of other models"}.get(state_of(row), state_of(row))


def runnable(row: dict) -> bool:
    return bool(row.get("runnable", True)) and state_of(row) not in ("component", "trainable") \
        and row.get("task") != "trainable"


def group_of(row: dict) -> str:
    """The row's group: "mine" for a trained model (a bundle), else its state."""
    return "mine" if row.get("bundle") else state_of(row)


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
        description = str(row.get("description") or "").split(". ")[0].rstrip(".")
        if group == "mine":
            classes = [str(c) for c in row.get("classes") or []]
            shown = ", ".join(classes[:4]) + (", …" if len(classes) > 4 else "")
            name = str(row.get("name") or row["id"])
            items.append(PickerItem(f"{name} — {shown or 'trained'}", row["id"],
                                    f"{description}\n{row['id']}" if description else row["id"]))
            continue
        items.append(PickerItem(f"{row['id']} — {state_text(row)}", row["id"], description))
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
