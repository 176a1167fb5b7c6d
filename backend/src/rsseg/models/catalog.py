"""The model list as plain rows (what `rsseg models --json`, the worker and the plugin show).

Weight status comes from the verification record, so listing never re-hashes large files.
Parameter counts of trainable models (builder "rsrefseg": trainable after LoRA, and total) are
computed once per config on torch's meta device (no weight memory, no init cost) and remembered
in memory and in a small JSON file in the user cache dir, so a listing normally imports no torch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..jsonfile import read_json_file, write_json_file
from ..spec import ModelSpec, WeightFile
from .registry import MODELS, get_spec

if TYPE_CHECKING:
    from ..weights.verify import WeightState

COUNTED_BUILDERS = ("rsrefseg", "rfm_seg", "sgseg")
# Families that count their own architecture: builder -> the module whose count_parameters(config) does
OWN_COUNTERS = {"rfm_seg": "rfm_seg.model", "sgseg": "sgseg.model"}
ENV_CACHE_DIR = "RSSEG_CACHE_DIR"
COUNTS_FILE = "parameter-counts.json"
_MAX_CACHED = 100
# Whatever decides the module structure: the config, these packages' versions and our model code.
_VERSIONED = ("torch", "open_clip_torch", "peft", "segment_anything")
_SOURCES = ("clip/builder.py", "rsrefseg/model.py", "rsrefseg/encoders.py", "rsrefseg/prompter.py", "rsrefseg/lora.py",
            "sam/builder.py", "rfm_seg/model.py", "rfm_seg/connectors.py", "unetformer/model.py", "sgseg/model.py",
            "sgseg/backbone.py", "sgseg/aggregation.py", "sgseg/decoder.py")

_counts: dict[str, Optional[tuple[int, int]]] = {}
_lock = threading.Lock()


def cache_dir() -> Path:
    """$RSSEG_CACHE_DIR, else the platform's per-user cache dir (e.g. ~/.cache/rsseg)."""
    configured = os.environ.get(ENV_CACHE_DIR)
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("rsseg", appauthor=False))


def _fingerprint(config: dict[str, Any]) -> str:
    from importlib import metadata

    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name in _VERSIONED:
        try:
            digest.update(f"{name}={metadata.version(name)};".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name}=none;".encode())
    here = Path(__file__).parent
    for source in _SOURCES:
        try:
            digest.update((here / source).read_bytes())
        except OSError:
            pass
    return digest.hexdigest()


def _read_file() -> dict[str, Any]:
    return read_json_file(cache_dir() / COUNTS_FILE)


def _write_file(key: str, counts: tuple[int, int]) -> None:
    data = _read_file()
    data.pop(key, None)
    data[key] = list(counts)
    try:
        write_json_file(cache_dir() / COUNTS_FILE, dict(list(data.items())[-_MAX_CACHED:]))  # newest last
    except OSError:  # a read-only cache only costs the next listing a recount
        pass


def _open_clip_architecture(clip: dict[str, Any]) -> dict[str, Any]:
    """A named open_clip model as the explicit-architecture config `build_vl_encoder` also takes.

    open_clip's create_model moves the model to a device at the end, which meta tensors cannot do;
    the class and constructor arguments are the same as create_model's (CLIP, or CustomTextCLIP
    for custom-text / Hugging Face text configs; timm / HF towers without pretrained weights).
    """
    if "open_clip_model" not in clip:
        return clip
    from .clip.builder import open_clip_module

    architecture = copy.deepcopy(open_clip_module().get_model_config(clip["open_clip_model"]))
    if architecture is None:
        raise ValueError(f"unknown open_clip model {clip['open_clip_model']!r}")
    hf_text = "hf_model_name" in architecture.get("text_cfg", {})
    custom_text = bool(architecture.pop("custom_text", False)) or hf_text
    if "timm_model_name" in architecture.get("vision_cfg", {}):
        architecture["vision_cfg"]["timm_model_pretrained"] = False
    if hf_text:
        architecture["text_cfg"]["hf_model_pretrained"] = False
    return {"architecture": architecture, "custom_text": custom_text}


def count_parameters(config: dict[str, Any], builder: str = "rsrefseg") -> tuple[int, int]:
    """(trainable, total) parameters of a config, built on the meta device: RSRefSeg with LoRA applied; the
    families of OWN_COUNTERS by their own count (RFM-Seg for 3 bands and 6 classes on its host family's
    architecture, SGSeg with both CLIP towers)."""
    import importlib

    import torch

    if builder in OWN_COUNTERS:
        return importlib.import_module(f"{__package__}.{OWN_COUNTERS[builder]}").count_parameters(config)

    from .rsrefseg.lora import apply_lora_config
    from .rsrefseg.model import build_rsrefseg, parameter_counts

    config = {**config, "clip": _open_clip_architecture(config["clip"])}
    with torch.device("meta"):
        model = build_rsrefseg(config, with_tokenizer=False)
        apply_lora_config(model, config)
    return parameter_counts(model)


def parameter_counts(spec: ModelSpec) -> Optional[tuple[int, int]]:
    """(trainable, total) for trainable models (builder "rsrefseg"), None for the others or when
    counting fails (a listing never fails for it; the reason goes to stderr)."""
    if spec.builder not in COUNTED_BUILDERS:
        return None
    key = _fingerprint({**spec.config, "builder": spec.builder})
    with _lock:
        if key in _counts:
            return _counts[key]
        stored = _read_file().get(key)
        if isinstance(stored, list) and len(stored) == 2 and all(isinstance(v, int) for v in stored):
            _counts[key] = (stored[0], stored[1])
            return _counts[key]
        try:
            counts: Optional[tuple[int, int]] = count_parameters(spec.config, spec.builder)
        except Exception as exc:  # noqa: BLE001 - an unexpected architecture must not break the list
            print(f"rsseg: could not count the parameters of {spec.id}: {exc}", file=sys.stderr)
            counts = None
        _counts[key] = counts
        if counts is not None:
            _write_file(key, counts)
        return counts


def clear_parameter_cache() -> None:
    """Forget the in-memory counts (the cache file stays; tests point ENV_CACHE_DIR elsewhere)."""
    with _lock:
        _counts.clear()


def model_state(spec: ModelSpec, status: list[tuple[WeightFile, "WeightState"]]) -> tuple[str, Optional[int]]:
    """(state, download_bytes) of a model for a model picker (contracts.MODEL_STATES, docs/weights.md).

    A component is "component" whatever its files; otherwise missing files come first ("download" when every
    one has a source, with the bytes still to fetch, None while a size is unknown; else "import"), then a
    needed checkpoint; "ready" means every file is present with its size and not known bad (one never hashed
    here is hashed at its first load).
    """
    from ..weights.store import candidate_urls

    if not spec.runnable:
        return spec.task, None  # "component" or "trainable"
    missing = [w for w, st in status if not (st.present and w.size is not None and st.size == w.size)]
    if missing:
        if not all(candidate_urls(w) for w in missing):
            return "import", None
        sizes = [w.size for w in missing]
        return "download", None if None in sizes else sum(sizes)
    return ("needs checkpoint" if spec.needs_checkpoint else "ready"), None


def model_row(spec: ModelSpec) -> dict:
    """One model as plain data: what `rsseg models --json`, the worker's `models` answer and the plugin show
    (the fields are documented in docs/weights.md)."""
    from ..weights.verify import all_present, resolved_status

    status = resolved_status(spec)
    # size / sha256 are None for a file the registry has no checksum for until a download pins them
    weights = [{"name": w.name, "size": w.size, "sha256": w.sha256, "published": original.published,
                "urls": list(w.urls), "path": str(st.path), "present": st.present, "verified": st.verified}
               for original, (w, st) in zip(spec.weights, status)]
    counts = parameter_counts(spec)
    state, download_bytes = model_state(spec, status)
    # test_model: the `test` model and the "-tiny" twins (random or no weights), which a UI hides by default
    return {"id": spec.id, "task": spec.task, "description": spec.description, "real": spec.real,
            "test_model": not spec.real, "state": state, "runnable": spec.runnable,
            "needs_checkpoint": spec.needs_checkpoint, "instances": spec.instances, "download_bytes": download_bytes,
            "licence": spec.licence, "weights": weights, "weights_present": all_present(status),
            "parameters_trainable": counts[0] if counts else None,
            "parameters_total": counts[1] if counts else None,
            "bundle": "bundle" in spec.config, "name": spec.config.get("bundle_name", spec.id),
            "classes": list(spec.config["classes"]) if "bundle" in spec.config else None}


def bundle_rows() -> list[dict]:
    """The user's trained models ("My models", bundles/index.py); a damaged bundle is left out with a note
    on stderr rather than failing the whole list."""
    from ..bundles.index import installed_bundles
    from ..bundles.spec import bundle_spec

    rows = []
    for path in installed_bundles():
        try:
            rows.append(model_row(bundle_spec(path)))
        except Exception as exc:  # noqa: BLE001 - one damaged bundle must not hide the others
            print(f"rsseg: skipping the model bundle {path}: {exc}", file=sys.stderr)
    return rows


def model_rows() -> list[dict]:
    return [*bundle_rows(), *(model_row(s) for s in MODELS.values())]


__all__ = ["get_spec", "model_row", "model_rows", "model_state", "parameter_counts", "count_parameters",
           "clear_parameter_cache"]
