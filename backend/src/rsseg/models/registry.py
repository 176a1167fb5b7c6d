"""The model registry: every model the backend can run, as data (see models/spec.py)."""

from __future__ import annotations

from typing import Callable

from ..errors import ModelError
from .base import SIGMOID, SOFTMAX, TileModel
from .spec import ModelSpec

MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.id in MODELS:
        raise ValueError(f"model id {spec.id!r} is registered twice")
    MODELS[spec.id] = spec
    return spec


register(ModelSpec(
    id="test",
    task="both",
    builder="colour-prototype",
    description="Pipeline test model: deterministic, weight-free colour matching (not a segmenter).",
    config={"radius": 2, "sharpness": 20.0},
    licence="GPL-2.0-or-later",
))


def _build_colour_prototype(spec: ModelSpec, prompts: list[str], activation: str, device: str) -> TileModel:
    from .colour_prototype import ColourPrototypeModel

    return ColourPrototypeModel(prompts, activation, bands=spec.preprocess.bands, **spec.config)


# builder name -> callable(spec, prompts, activation, device) -> TileModel
BUILDERS: dict[str, Callable[[ModelSpec, list[str], str, str], TileModel]] = {
    "colour-prototype": _build_colour_prototype,
}


def get_spec(model_id: str) -> ModelSpec:
    try:
        return MODELS[model_id]
    except KeyError:
        raise ModelError(f"unknown model {model_id!r}; registered models: {', '.join(sorted(MODELS))} "
                         "(see `rsseg models`)") from None


def build_model(model_id: str, classes: list[str] | None, sentence: str | None, device: str = "cpu") -> TileModel:
    """Build the model for one prompt: a class list (softmax) or a referring sentence (sigmoid)."""
    spec = get_spec(model_id)
    mode = "sentence" if sentence is not None else "classes"
    if not spec.accepts(mode):
        raise ModelError(f"model {model_id!r} takes {spec.task}, not a {'sentence' if mode == 'sentence' else 'class list'}")
    if mode == "sentence":
        prompts, activation = [sentence.strip()], SIGMOID
    else:
        prompts, activation = [c.strip() for c in classes or [] if c.strip()], SOFTMAX
    if not prompts or not prompts[0]:
        raise ModelError("the prompt is empty: give a class list (e.g. 'building, road, tree') or a sentence")
    return BUILDERS[spec.builder](spec, prompts, activation, device)
