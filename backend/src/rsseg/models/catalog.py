"""The model list as plain rows (what `rsseg models --json`, the worker and the plugin show).

Weight status comes from the verification record, so listing never re-hashes large files.
"""

from __future__ import annotations

from .registry import MODELS, get_spec
from .spec import ModelSpec


def model_row(spec: ModelSpec) -> dict:
    from ..weights import weight_status

    states = weight_status(spec)
    weights = [{"name": w.name, "size": w.size, "sha256": w.sha256, "urls": list(w.urls), "path": str(st.path),
                "present": st.present, "verified": st.verified} for w, st in zip(spec.weights, states)]
    return {"id": spec.id, "task": spec.task, "description": spec.description, "real": spec.real,
            "licence": spec.licence, "weights": weights,
            "weights_present": all(st.present and st.size == w.size for w, st in zip(spec.weights, states))}


def model_rows() -> list[dict]:
    return [model_row(s) for s in MODELS.values()]


__all__ = ["get_spec", "model_row", "model_rows"]
