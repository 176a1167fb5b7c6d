"""Loading checkpoints safely: safetensors, or torch.load with weights_only=True; never a bare pickle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import WeightsError

WRAPPER_KEYS = ("model", "state_dict")  # checkpoints that wrap the state dict one level down


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
