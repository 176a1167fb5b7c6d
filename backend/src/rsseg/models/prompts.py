"""Class prompts: one class per item, comma-separated synonyms ("road, parking lot"), first one shown.

Shared by the CLIP text side, the eval class files and anything that names classes; no torch here.
"""

from __future__ import annotations


def synonyms(line: str) -> list[str]:
    names = [n.strip() for n in line.split(",") if n.strip()]
    return names or [line.strip()]


def display_name(line: str) -> str:
    """The first synonym names the class in the outputs ("road, parking lot" -> "road")."""
    return synonyms(line)[0]
