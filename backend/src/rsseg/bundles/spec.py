"""A bundle as a registry spec, so the factory, the engine and the service run it like any model.

The spec's id is the bundle folder's absolute path (what `--model RUN` and the plugin pass); its
config is the manifest's architecture plus the folder, from which the family's builder loads the
checked weights. Specs are remembered per manifest modification time, so a retrained bundle is re-read.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..spec import ModelSpec, Preprocess
from .format import BUNDLE_FILE, bundle_dir, is_bundle, read_bundle

_specs: dict[tuple[str, int], ModelSpec] = {}
_lock = threading.Lock()


def bundle_id(path: "str | Path") -> str:
    return str(bundle_dir(path).resolve())


def bundle_spec(path: "str | Path") -> ModelSpec:
    folder = Path(bundle_id(path))
    if not is_bundle(folder):
        read_bundle(folder)  # raises, saying what the folder lacks
    key = (str(folder), (folder / BUNDLE_FILE).stat().st_mtime_ns)
    with _lock:
        if key in _specs:
            return _specs[key]
    info = read_bundle(folder)
    metrics = info.metrics.get("miou")
    score = f", validation mIoU {metrics:.3f}" if isinstance(metrics, float) else ""
    spec = ModelSpec(
        id=str(folder), task="classes", builder=info.builder,
        description=info.description or (
            f"{info.name}: open vocabulary, give it any class names (trained on your layers: "
            f"{', '.join(info.classes)}{score})" if info.config.get("open_vocabulary") else
            f"{info.name}: trained on your layers ({', '.join(info.classes)}){score}"),
        config={**info.config, "bundle": str(folder), "bundle_name": info.name, "classes": list(info.classes)},
        preprocess=Preprocess(info.n_inputs, tuple(info.mean), tuple(info.std), None,
                              source_bands=tuple(info.bands), resolution=info.resolution,
                              value_range=None if info.value_range is None else
                              (float(info.value_range[0]), float(info.value_range[1]))),
        licence="your own model", real=True)
    with _lock:
        _specs[key] = spec
    return spec
