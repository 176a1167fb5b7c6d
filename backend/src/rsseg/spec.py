"""Model specifications as data: what a model is, what it needs and where its weights come from.

A spec names a builder and the builder's config. Each model family registers its builders from its
own package (models/<family>/family.py, into models/factory.py); the engine and the service never
branch on model ids: later models add registry entries and, for a new family, its package.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from .protocol.contracts import NOT_RUN, TASKS, task_accepts


@dataclass(frozen=True)
class WeightFile:
    """One file a model needs; `sha256` is checked after download or import.

    `size` and `sha256` are None only where the publisher's pages state neither (e.g. a Hugging Face
    file that is not in LFS): the hub's own record of the file at the commit pinned in the URL then
    vouches for it at download, and the result is pinned in the weights dir (weights/attest.py).
    `name` is the path under the weights dir; a folder in it (`tokenizer/x.json`) keeps files together.
    """

    name: str
    size: Optional[int]
    sha256: Optional[str]
    urls: tuple[str, ...] = ()

    @property
    def published(self) -> bool:
        """True when the registry itself states the size and the sha256."""
        return self.size is not None and self.sha256 is not None


@dataclass(frozen=True)
class Preprocess:
    """What the model expects from the raster engine: band count and value scaling.

    The engine hands the model tiles stretched to [0, 1]; the model applies `mean`/`std` itself
    (in the same units), so the engine stays model-agnostic.
    """

    bands: int = 3
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    input_size: Optional[int] = None  # None: any tile size
    # Defaults for a request that names none: a trained bundle's bands and grid (bundles/spec.py)
    source_bands: Optional[tuple[int, ...]] = None
    resolution: Optional[float] = None  # metres per pixel
    # A fixed stretch (low, high for every band) instead of the request's percentile stretch: a bundle trained on
    # 8-bit benchmark images scaled 0..255 -> 0..1 (training/dataset_run.py) segments with exactly that scaling
    value_range: Optional[tuple[float, float]] = None


@dataclass(frozen=True)
class ModelSpec:
    id: str
    task: str
    builder: str
    description: str
    config: dict[str, Any] = field(default_factory=dict)
    preprocess: Preprocess = field(default_factory=Preprocess)
    weights: tuple[WeightFile, ...] = ()
    licence: str = ""
    real: bool = False  # False for test and "-tiny" models (random or no weights, not for real use)
    # True for a model whose trained weights were never released: it runs only with the checkpoint of a
    # training run (the request's `checkpoint`), as the real RSRefSeg entries
    needs_checkpoint: bool = False
    # True for a model that finds separate objects (zero-shot referring, SAM 3): one polygon per object with its
    # score and rank, and a sentence takes `top_k` (execution.tile_model.InstanceTileModel)
    instances: bool = False
    # True for a model computed with numpy alone (the `test` model): "auto" runs it on the CPU without
    # importing torch, whose import is seconds and hundreds of MB a short job does not need
    numpy_only: bool = False

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"model {self.id!r}: task must be one of {TASKS}, got {self.task!r}")

    @property
    def runnable(self) -> bool:
        return self.task not in NOT_RUN

    def accepts(self, mode: str) -> bool:
        return task_accepts(self.task, mode)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
