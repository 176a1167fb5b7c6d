"""Training checkpoints: the trainable state only, as safetensors (tensors) + JSON (everything else).

What is written: the trainer's trainable state (for RSRefSeg its `trainable_state_dict`: LoRA
adapters, prompter, SAM prompt encoder and mask decoder, never the frozen base weights; for other
families what their trainer's `trainable_state` returns), the optimizer's per-parameter tensors, the
torch RNG state(s); the JSON holds the model config id, step, the optimizer's hyper-parameters,
the scheduler and grad-scaler state and metrics. Both files are written under temporary names and
renamed into place, the JSON last, so an interrupted save leaves the previous checkpoint intact
and a JSON always names a complete tensor file. Loading uses safetensors only (no pickle), reads
only a tensor file beside or below its JSON (a JSON is a file users pass around: its `tensors` must
not point anywhere else), and turns every unreadable part into one ModelError naming the checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Optional, Union

import torch
from safetensors.torch import load_file, save_file

from ..errors import ModelError

FORMAT = "rsseg-train-checkpoint/1"
MODEL, OPTIM, RNG = "model.", "optim.", "rng."


@dataclass
class Checkpoint:
    """A loaded checkpoint: the tensors split by kind, and the JSON record."""

    model: dict[str, torch.Tensor]
    optimizer: Optional[dict[str, Any]]
    rng: dict[str, torch.Tensor]
    record: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.record["step"])


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(stem: Union[str, Path], model_state: dict[str, torch.Tensor], record: dict[str, Any],
                    optimizer: Optional[torch.optim.Optimizer] = None,
                    rng: Optional[dict[str, torch.Tensor]] = None) -> Path:
    """Write `<stem>.safetensors` and `<stem>.json`; returns the JSON path."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    tensors = {MODEL + k: v.detach().cpu().contiguous().clone() for k, v in model_state.items()}
    record = {"format": FORMAT, **record, "tensors": f"{stem.name}.safetensors"}
    if optimizer is not None:
        state = optimizer.state_dict()
        for index, values in state["state"].items():
            for name, value in values.items():
                if not torch.is_tensor(value):
                    value = torch.tensor(value)
                tensors[f"{OPTIM}{index}.{name}"] = value.detach().cpu().contiguous().clone()
        record["optimizer"] = {"param_groups": state["param_groups"]}
    for name, value in (rng or {}).items():
        tensors[RNG + name] = value.cpu().contiguous().clone()
    _atomic(stem.with_suffix(".safetensors"), lambda p: save_file(tensors, str(p)))
    json_path = stem.with_suffix(".json")
    _atomic(json_path, lambda p: p.write_text(json.dumps(record, indent=2, default=_plain), encoding="utf-8"))
    return json_path


def _plain(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _json_of(path: Path) -> Path:
    """The JSON a checkpoint path names: itself, or the one beside its .safetensors or stem; never
    a .json guessed from some other file (e.g. a raster given by mistake)."""
    if path.suffix == ".json":
        return path
    if path.suffix == ".safetensors" or (path.suffix == "" and not path.exists()):
        return path.with_suffix(".json")
    raise ModelError(f"{path} is not an rsseg checkpoint JSON: expected the .json that a training run writes "
                     "(RUN/checkpoints/step-N.json, beside its .safetensors)")


def read_record(path: Union[str, Path]) -> tuple[Path, dict[str, Any]]:
    """(JSON path, record) of a checkpoint given its JSON or safetensors path (or the stem)."""
    path = Path(path)
    json_path = _json_of(path)
    if not json_path.is_file():
        named = "" if json_path == path else f" (the JSON of {path})"
        raise ModelError(f"checkpoint not found: {json_path}{named}")
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{json_path}: not an rsseg training checkpoint ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        found = record.get("format") if isinstance(record, dict) else None
        raise ModelError(f"{json_path}: not an rsseg training checkpoint (format {found!r})")
    return json_path, record


def _tensors_of(json_path: Path, record: dict[str, Any]) -> Path:
    """The tensor file a record names, refused unless it lies beside or below its JSON."""
    name = record.get("tensors")
    if not isinstance(name, str) or not name or ".." in PureWindowsPath(name).parts or \
            PureWindowsPath(name).anchor or PurePosixPath(name).is_absolute():
        raise ModelError(f"{json_path}: refused, its tensor file {name!r} must be a relative path beside or below "
                         "the JSON (no '..', not absolute)")
    return json_path.parent / name


def tensors_path(path: Union[str, Path]) -> Path:
    """The safetensors file a checkpoint's JSON names."""
    return _tensors_of(*read_record(path))


def _load_tensors(json_path: Path, tensors: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, or one ModelError naming the checkpoint (missing, truncated, a pickle...)."""
    if not tensors.is_file():
        raise ModelError(f"checkpoint {json_path}: its tensor file {tensors} is missing")
    try:
        return load_file(str(tensors))
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError...: one line for the user
        with open(tensors, "rb") as f:
            pickle = f.read(4).startswith((b"PK\x03\x04", b"\x80"))  # torch.save's zip, or a bare pickle
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        what = "a torch pickle, which is never loaded" if pickle else f"damaged or truncated: {reason}"
        raise ModelError(f"checkpoint {json_path}: its tensor file {tensors} is not a complete safetensors file "
                         f"({what})") from None


def load_checkpoint(path: Union[str, Path]) -> Checkpoint:
    """Read a checkpoint from its JSON or safetensors path (or the stem)."""
    json_path, record = read_record(path)
    tensors = _load_tensors(json_path, _tensors_of(json_path, record))
    model = {k[len(MODEL):]: v for k, v in tensors.items() if k.startswith(MODEL)}
    rng = {k[len(RNG):]: v for k, v in tensors.items() if k.startswith(RNG)}
    optimizer = None
    if "optimizer" in record:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith(OPTIM):
                index, name = key[len(OPTIM):].split(".", 1)
                state.setdefault(int(index), {})[name] = value
        groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in record["optimizer"]["param_groups"]]
        optimizer = {"state": state, "param_groups": groups}
    return Checkpoint(model, optimizer, rng, record)
