"""The prompts of a benchmark dataset: its class-name file (shipped here, or --classes-file) read in
class-index order. Kept apart from class_files.py, which `rsseg --help` imports, because it needs
the dataset specs (numpy and rasterio)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .class_files import builtin_classnames, load_classnames
from .semantic import DatasetError, DatasetSpec


def dataset_class_file(spec: DatasetSpec, override: Optional[str] = None) -> Path:
    """The class-name file of a dataset: `override` (--classes-file), else the one shipped for it."""
    if override:
        return Path(override)
    if spec.classnames is None:
        raise DatasetError(f"the {spec.name} layout needs a class-name file: give --classes-file "
                           "(one class per line, label value i is line i+1)")
    return builtin_classnames(spec.classnames)


def dataset_classes(spec: DatasetSpec, classes_file: Optional[str] = None) -> list[str]:
    """The prompts in class-index order; a file given for a fixed-class dataset must match its count."""
    lines = load_classnames(dataset_class_file(spec, classes_file))
    if spec.label_values is not None:
        expected = len(set(spec.label_values.values()))
        if len(lines) != expected:
            raise DatasetError(f"{classes_file}: {len(lines)} classes, but {spec.title} has {expected} "
                               "(one line per class, in label order)")
    return lines
