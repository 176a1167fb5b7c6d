"""The Processing algorithms' Model list, without asking the backend.

QGIS builds an algorithm's parameters at start-up and each time a dialog opens, where starting a
worker to list the models would cost seconds. So the list is the one the RS RefSeg dock last received
from the worker (its `models` rows, stored as JSON in QgsSettings under CACHE_KEY), narrowed to the
models that run the algorithm's prompt mode; with no list stored yet, the default model of the mode.
Test-size models (random weights) are hidden unless SHOW_TEST_KEY is true; the mode's default model
is always offered. A model the list does not show can still be typed into "Custom model id", and a
script may pass any id (the algorithms accept it, base.BackendAlgorithm.checkParameterValues).
The user's trained models (bundles: their model id is the folder's path) run class lists and are listed
with the others; the families one can train (task "trainable") are offered only by "Train from layers"
(`trainable_choices`).
"""

from __future__ import annotations

import json
from typing import Any, Optional

from qgis.core import QgsSettings

from ..core.settings import PREFIX
from ..protocol.contracts import DEFAULT_MODELS, task_accepts
from ..protocol.training import DEFAULT_TRAINABLE, TRAINABLE_MODELS

CACHE_KEY = PREFIX + "models_cache"  # the worker's `models` rows as a JSON list, written by the dock
SHOW_TEST_KEY = PREFIX + "show_test_models"


def _flag(value: Any, default: bool) -> bool:
    """A QgsSettings or JSON boolean: True/False, "true"/"false" (an ini file's spelling), 1/0."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    if isinstance(value, int):
        return bool(value)
    return default


def cached_rows(settings: Optional[QgsSettings] = None) -> Optional[list[dict]]:
    """The model rows the dock stored, or None when there are none (or they cannot be read)."""
    value = (settings or QgsSettings()).value(CACHE_KEY, None)
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, (list, tuple)):
        return None
    return [row for row in value if isinstance(row, dict) and isinstance(row.get("id"), str) and row["id"].strip()]


def is_test_model(row: dict) -> bool:
    """The `test` model and the "-tiny" twins: random or no weights, for tests, hidden by default."""
    model_id = row["id"].strip()
    return _flag(row.get("test_model"), False) or model_id.endswith("-tiny") or model_id == "test"


def show_test_models(settings: Optional[QgsSettings] = None) -> bool:
    return _flag((settings or QgsSettings()).value(SHOW_TEST_KEY, False), False)


def model_choices(mode: str, settings: Optional[QgsSettings] = None) -> list[str]:
    """The model ids the Model list of an algorithm of prompt `mode` offers: the stored rows' models
    that run `mode` and can run (not components), in the stored order, with the mode's default first
    when the rows lack it (or hide it); just the default when nothing is stored."""
    settings = settings or QgsSettings()
    default = DEFAULT_MODELS[mode]
    rows = cached_rows(settings)
    if rows is None:
        return [default]
    show_tests = show_test_models(settings)
    ids: list[str] = []
    for row in rows:
        model_id = row["id"].strip()
        if model_id in ids or not task_accepts(str(row.get("task", "")), mode):
            continue
        if not _flag(row.get("runnable"), True) or (is_test_model(row) and not show_tests and not row.get("bundle")):
            continue
        ids.append(model_id)
    if default not in ids:
        ids.insert(0, default)
    return ids


def trainable_choices(settings: Optional[QgsSettings] = None) -> list[str]:
    """The model families "Train from layers" offers: the stored rows of task "trainable" (test twins only
    when test models are shown), else the protocol's list; DEFAULT_TRAINABLE always."""
    settings = settings or QgsSettings()
    rows = cached_rows(settings) or []
    show_tests = show_test_models(settings)
    ids = [row["id"].strip() for row in rows
           if row.get("task") == "trainable" and (show_tests or not is_test_model(row))]
    ids = list(dict.fromkeys(ids)) or list(TRAINABLE_MODELS)
    if DEFAULT_TRAINABLE not in ids:
        ids.insert(0, DEFAULT_TRAINABLE)
    return ids


def add_bundle_row(model: str, name: str, classes: list[str], settings: Optional[QgsSettings] = None) -> None:
    """Put a model just trained in the stored list (first, as the worker lists bundles), so the Model list
    of "Segment classes" offers it before the dock lists the models again."""
    settings = settings or QgsSettings()
    rows = [row for row in cached_rows(settings) or [] if row["id"] != model]
    row = {"id": model, "task": "classes", "bundle": True, "name": name, "classes": list(classes),
           "runnable": True, "state": "ready", "description": f"{name}: trained on your layers"}
    settings.setValue(CACHE_KEY, json.dumps([row, *rows]))
