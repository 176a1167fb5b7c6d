"""For the plugin tests that train a model on layers: a small synthetic scene (tests/field_scenes.py, yellow
water), training on it into a module's "My models", and the dock on a worker that lists them."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from field_scenes import scene

SIZE = 128
YELLOW = (220, 210, 60)


def write_scene(root: Path) -> tuple[Path, Path]:
    """A field with red buildings and yellow water squares: the raster and its labels (field `kind`)."""
    raster, labels, _, kinds = scene(root, "scene", 0, YELLOW, size=SIZE, count=20, sides=(12, 24))
    assert set(np.unique(kinds)) == {0, 1, 2}
    return raster, labels


@contextmanager
def scene_training(root: Path) -> Iterator[tuple[Callable[..., Any], Path, Path]]:
    """The scene under `root`, and train(model, out, epochs, **fields): the backend's train_layers on it in one torch
    thread (chip 64, no validation), each bundle remembered in root/rsseg-models ("My models", which a worker
    started with RSSEG_MODELS_DIR there lists). Yields (train, raster, models folder)."""
    import torch

    from rsseg.protocol.training import TrainLayersRequest
    from rsseg.training.layers_run import train_layers

    models = root / "rsseg-models"
    raster, labels = write_scene(root)

    def train(model: str, out: str, epochs: int, **fields: Any):
        return train_layers(TrainLayersRequest(
            raster=str(raster), labels=str(labels), field="kind", out=str(root / out), model=model, epochs=epochs,
            chip=64, stride=32, batch_size=8, validation="none", patience=0, device="cpu", seed=0, **fields))

    patch = pytest.MonkeyPatch()
    patch.setenv("RSSEG_MODELS_DIR", str(models))  # train_layers remembers each bundle here (remember_bundle)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield train, raster, models
    finally:
        torch.set_num_threads(threads)
        patch.undo()


def dock_listing(models: Path, started_plugin: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The dock on a worker that lists the bundles of `models` ("My models"), once it has listed them (a fixture's
    body: `yield from dock_listing(...)`)."""
    from qt_events import wait_for

    from rs_refseg_plugin.core.backend import close_shared_backend

    close_shared_backend()
    monkeypatch.setenv("RSSEG_PYTHON", sys.executable)
    monkeypatch.setenv("RSSEG_MODELS_DIR", str(models))
    dock = started_plugin.show_dock()
    wait_for(lambda: bool(dock.models) and dock.side_task is None, 120)
    yield dock
    close_shared_backend()


def pick(dock: Any, model: str) -> None:
    """Pick `model` in the dock's model list as a user does."""
    index = dock.model.findData(model)
    assert index >= 0, [dock.model.itemText(i) for i in range(dock.model.count())]
    dock.model.setCurrentIndex(index)
    dock.model.activated.emit(index)
