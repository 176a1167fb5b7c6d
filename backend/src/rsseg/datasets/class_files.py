"""Class-name files in SegEarth-OV's format: one class per line, comma-separated synonyms.

The first name on a line names the class in tables; the whole line is one prompt, and the model
splits it on commas (models/clip/text.py scores a class as its best synonym).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from ..errors import RssegError

PACKAGE_DIR = "classnames"  # package data: rsseg/datasets/classnames/*.txt


class ClassFileError(RssegError):
    """A class-name file is missing, empty or unreadable."""


def load_classnames(path: str | os.PathLike) -> list[str]:
    """One prompt per non-blank line, synonyms joined by ',' with the spaces around them removed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ClassFileError(f"class-name file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ClassFileError(f"cannot read the class-name file {path}: {exc}") from exc
    lines = []
    for raw in text.splitlines():
        names = [n.strip() for n in raw.split(",") if n.strip()]
        if names:
            lines.append(",".join(names))
    if not lines:
        raise ClassFileError(f"class-name file {path} holds no class (expected one class per line)")
    return lines


def builtin_classnames(file_name: str) -> Path:
    """Path of a class-name file shipped with the package (installed as package data)."""
    return Path(str(resources.files(__package__).joinpath(PACKAGE_DIR, file_name)))
