"""Loading checkpoints safely: safetensors, or torch.load with weights_only=True; never a bare pickle.

Registered models reach these files only through `installed_path` (or `checked_copy`), which proves
size and sha256 first (verify.checked_paths). Errors are our own one line naming the file: torch's
advice to retry with weights_only=False is never passed on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..spec import ModelSpec
from .verify import checked_copy, checked_paths

__all__ = ["checked_copy", "installed_path", "load_checkpoint", "load_state_strict"]

WRAPPER_KEYS = ("model", "state_dict")  # checkpoints that wrap the state dict one level down
MAX_LISTED_KEYS = 5


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A state dict (name -> tensor) from a .safetensors file or a weights-only torch checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError...: one line naming the file
            raise WeightsError(f"{path} is not a complete safetensors file ({_reason(exc)})") from None
    # pickle only for its error type: torch.load below runs with weights_only=True
    import pickle  # nosec B403

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's text advises weights_only=False: never repeat that
        raise WeightsError(f"{path} is not a weights-only torch checkpoint: it is damaged, or holds Python objects "
                           "besides tensors, which are never unpickled (that could run code)") from None
    except Exception as exc:  # noqa: BLE001 - truncated zips, foreign formats...: report one line
        raise WeightsError(f"{path} is not a readable torch checkpoint ({_reason(exc)})") from None
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def _reason(exc: Exception) -> str:
    """The exception's first line, without any advice to load with weights_only=False."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return type(exc).__name__ if not first or "weights_only" in first else f"{type(exc).__name__}: {first}"


def installed_path(spec: ModelSpec) -> Path:
    """The first weight file of a real spec, after every file of the spec passed verify.checked_paths
    (the one check before any loader reads weights); WeightsError with the fixing command otherwise."""
    return checked_paths(spec)[0]


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
