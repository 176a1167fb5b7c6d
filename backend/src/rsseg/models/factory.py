"""Building models from their specs: the builders each family registers, and the warm-model cache.

The registry (registry.py) is data; this is construction. A family registers its builders from its
own package, in `models/<family>/family.py`, named "<family>" or "<family>:<kind>"; the factory
imports that module the first time one of its builders is asked for (and only that family: a job
with the `test` model imports no torch). Adding a family touches its package and one registry
entry, nothing here, in the engine, the service or the plugin.
"""

from __future__ import annotations

import importlib
import threading
from collections import OrderedDict
from typing import Any, Callable, TypeVar

from ..errors import ModelError, request_rules
from ..execution.tile_model import SIGMOID, SOFTMAX, TileModel
from ..protocol.contracts import check_prompt
from ..spec import ModelSpec
from .registry import get_spec

# (spec, prompts, activation, device, options) -> TileModel; options are per-request overrides of the
# spec's config (e.g. {"upsample": "bilinear", "sam_refine": "peaks"})
Builder = Callable[[ModelSpec, list[str], str, str, dict[str, Any]], TileModel]
ComponentLoader = Callable[[ModelSpec, str], Any]  # (spec, device) -> the loaded component (e.g. a SAM)
BUILDERS: dict[str, Builder] = {}
COMPONENT_LOADERS: dict[str, ComponentLoader] = {}
FAMILY_MODULE = "family"  # models/<family>/family.py registers the family's builders
F = TypeVar("F", bound=Callable)


def _registrar(table: dict[str, Any], kind: str) -> Callable[[str], Callable[[F], F]]:
    def register_as(name: str) -> Callable[[F], F]:
        def add(function: F) -> F:
            if table.get(name, function) is not function:
                raise ValueError(f"{kind} {name!r} is registered twice")
            table[name] = function
            return function
        return add
    return register_as


builder = _registrar(BUILDERS, "builder")  # @builder("clip:open-vocab") def build(spec, prompts, ...)
component_loader = _registrar(COMPONENT_LOADERS, "component loader")  # @component_loader("sam")


def _lookup(table: dict[str, Any], name: str, kind: str) -> Any:
    """The builder `name` ("<family>" or "<family>:<kind>"), importing models/<family>/family.py,
    which registers it, the first time: only the family a job needs is imported."""
    if name not in table:
        family = f"{__package__}.{name.split(':', 1)[0]}"
        try:
            importlib.import_module(f"{family}.{FAMILY_MODULE}")
        except ModuleNotFoundError as exc:
            if exc.name not in (family, f"{family}.{FAMILY_MODULE}"):  # the family needs a missing package
                raise
    if name not in table:
        raise ModelError(f"no {kind} {name!r} is registered: a model family registers it in its "
                         f"models/<family>/{FAMILY_MODULE}.py (builder names are \"<family>\" or "
                         "\"<family>:<kind>\")")
    return table[name]


def get_builder(name: str) -> Builder:
    return _lookup(BUILDERS, name, "builder")


# Which models take each per-request option (SegmentRequest.model_options), for the refusal's message
OPTION_TAKERS = {"upsample": "the open-vocabulary CLIP models", "sam_refine": "the open-vocabulary CLIP models",
                 "checkpoint": "trained referring models (RSRefSeg)",
                 "top_k": "models that find objects with a sentence: zero-shot referring and SAM 3"}


def refuse_options(spec: ModelSpec, options: dict[str, Any]) -> None:
    """For families whose models take none of these per-request options."""
    if options:
        names = sorted(options)
        takers = "; ".join(f"{n} is for {OPTION_TAKERS[n]}" for n in names if n in OPTION_TAKERS)
        raise ModelError(f"model {spec.id!r} takes no {', '.join(names)} option" + (f" ({takers})" if takers else ""))


def weights_id(spec: ModelSpec) -> str:
    """What the loaded weights are (id and file hashes): the feature cache keys encoder outputs by it."""
    from ..weights.attest import pinned

    return f"{spec.id}:{','.join((pinned(w).sha256 or w.name)[:16] for w in spec.weights) or 'random'}"


WARM_MODELS = 2  # loaded backbones kept in memory, so a worker's next request skips loading weights
_warm: "OrderedDict[tuple, Any]" = OrderedDict()
_warm_lock = threading.Lock()


def warm(spec: ModelSpec, device: str, load: Callable[[ModelSpec, str], Any], variant: tuple = ()) -> Any:
    """`load(spec, device)`, remembered for the last WARM_MODELS (id, device, weight mtimes, and
    `variant`, which names what else the loaded instance depends on, e.g. a checkpoint).

    Callers share the returned instance and must not modify it (wrap it instead, e.g. with LoRA).
    """
    from ..weights import weight_path

    stamps = tuple(weight_path(w).stat().st_mtime_ns if weight_path(w).exists() else None for w in spec.weights)
    key = (spec.id, device, stamps, variant or load)
    with _warm_lock:
        if key in _warm:
            _warm.move_to_end(key)
            return _warm[key]
        loaded = load(spec, device)
        _warm[key] = loaded
        while len(_warm) > WARM_MODELS:
            _warm.popitem(last=False)
        return loaded


def load_component(model_id: str, device: str = "cpu") -> Any:
    """A component model (task "component") with its weights, for the models that build on it."""
    spec = get_spec(model_id)
    if spec.runnable:
        raise ModelError(f"{model_id!r} is a segmenter, not a component: build it with build_model()")
    return warm(spec, device, _lookup(COMPONENT_LOADERS, spec.builder, "component loader"))


def build_model(model_id: str, classes: list[str] | None, sentence: str | None, device: str = "cpu",
                options: dict[str, Any] | None = None) -> TileModel:
    """Build the model for one prompt: a class list (softmax) or a referring sentence (sigmoid);
    `options` override the model's config for this request (refinement, see SegmentRequest)."""
    spec = get_spec(model_id)
    if not spec.runnable:
        raise ModelError(f"{model_id} is a component used by other models, not a segmenter you can run directly")
    mode = "sentence" if sentence is not None else "classes"
    if not spec.accepts(mode):
        raise ModelError(f"model {model_id!r} takes {spec.task}, "
                         f"not a {'sentence' if mode == 'sentence' else 'class list'}")
    with request_rules():
        check_prompt(classes, sentence)
    if mode == "sentence":
        prompts, activation = [sentence.strip()], SIGMOID
    else:
        prompts, activation = [c.strip() for c in classes], SOFTMAX
    return get_builder(spec.builder)(spec, prompts, activation, device, dict(options or {}))
