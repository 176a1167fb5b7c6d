"""Trainers by model family: `rsseg train` takes the trainer of its model's family from here.

A family's trainer subclasses `BaseTrainer` (base.py) in `training/<family>.py` and registers it
with `@trainer("<family>")`, as models register builders with `@builder` (models/factory.py). The
family is the part of a registry entry's builder name before ":" ("clip:open-vocab" is "clip").
The registry imports `training/<family>.py` the first time that family is asked for, so only the
family a run needs is imported. Torch-free itself: `rsseg --help` may import it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable, Optional, TypeVar

from ..errors import ModelError

if TYPE_CHECKING:
    from .base import BaseTrainer

TRAINERS: dict[str, "type[BaseTrainer]"] = {}
T = TypeVar("T", bound="type[BaseTrainer]")


def trainer(family: str) -> Callable[[T], T]:
    """Class decorator: `@trainer("rsrefseg") class RSRefSegTrainer(BaseTrainer)`."""
    def add(cls: T) -> T:
        if TRAINERS.get(family, cls) is not cls:
            raise ValueError(f"a trainer for family {family!r} is registered twice")
        TRAINERS[family] = cls
        cls.family = family
        return cls
    return add


def family_of(builder: str) -> str:
    """The family of a builder name: "clip:open-vocab" -> "clip"."""
    return builder.split(":", 1)[0]


def find_trainer(family: str) -> "Optional[type[BaseTrainer]]":
    """The family's trainer, importing training/<family>.py the first time; None if it has none."""
    if family not in TRAINERS and family.isidentifier():
        module = f"{__package__}.{family}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the family's module exists but needs a missing package
                raise
    return TRAINERS.get(family)


def get_trainer(family: str) -> "type[BaseTrainer]":
    found = find_trainer(family)
    if found is None:
        raise ModelError(f"no trainer is registered for model family {family!r}: a family registers one with "
                         f"@trainer({family!r}) in training/{family}.py")
    return found
