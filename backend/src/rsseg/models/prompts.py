"""Class prompts: one class per item, comma-separated synonyms ("road, parking lot"), first one shown.

Shared by the CLIP text side, the eval class files and anything that names classes; no torch here.
"""

from __future__ import annotations

from ..protocol.contracts import class_names


def synonyms(line: str) -> list[str]:
    """The class line's names (the protocol's split); a line naming none (refused in requests) is itself."""
    return class_names(line) or [line.strip()]


def display_name(line: str) -> str:
    """The first synonym names the class in the outputs ("road, parking lot" -> "road")."""
    return synonyms(line)[0]
