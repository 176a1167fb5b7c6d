"""Loading checkpoints safely: safetensors, or torch.load with weights_only=True; never a bare pickle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..models.spec import ModelSpec
from .store import weight_path

WRAPPER_KEYS = ("model", "state_dict")  # checkpoints that wrap the state dict one level down
MAX_LISTED_KEYS = 5


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A state dict (name -> tensor) from a .safetensors file or a weights-only torch checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors have many types; report one line
        raise WeightsError(f"{path} is not a weights-only torch checkpoint ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def installed_path(spec: ModelSpec) -> Path:
    """The installed weight file of a real spec; WeightsError with the fix when it is missing."""
    path = weight_path(spec.weights[0])
    if not path.is_file():
        raise WeightsError(f"weights for {spec.id} are not installed: run `rsseg models download {spec.id}` "
                           f"(or `rsseg models import {spec.id} FILE`)")
    return path


def _listed(keys: set[str]) -> str:
    shown = sorted(keys)[:MAX_LISTED_KEYS]
    return ", ".join(shown) + (f" (+{len(keys) - len(shown)} more)" if len(keys) > len(shown) else "")


def load_state_strict(model: Any, state: dict[str, Any], source: str) -> None:
    """load_state_dict(strict=True), with missing / unexpected / mis-shaped keys as one WeightsError."""
    expected = model.state_dict()
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    shapes = {k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape)}
    if shapes:
        problems.append(f"wrong shapes: {_listed(shapes)}")
    if problems:
        raise WeightsError(f"{source} does not fit this architecture; " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
