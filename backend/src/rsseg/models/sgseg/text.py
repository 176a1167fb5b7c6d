"""SGSeg's text side: one embedding per class and template, from the frozen text tower.

The cost volume keeps templates apart (one channel each, as CAT-Seg), so a class is [P, E]. A class line
with synonyms ("building, roof") is the normalised mean of its names' embeddings, per template.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from ...errors import ModelError
from ..prompts import synonyms
from .configs import IMAGENET_80, TEMPLATES


def templates(name: str) -> Sequence[Callable[[str], str]]:
    if name == IMAGENET_80:
        from ..clip.text import IMAGENET_TEMPLATES

        return tuple(IMAGENET_TEMPLATES)
    if name not in TEMPLATES:
        raise ModelError(f"SGSeg: unknown templates {name!r}; expected {', '.join([*TEMPLATES, IMAGENET_80])}")
    return tuple(t.format for t in TEMPLATES[name])


@torch.no_grad()
def class_text(clip: Any, tokenizer: Any, lines: Sequence[str], template_set: Sequence[Callable[[str], str]],
               device: str, chunk: int = 256) -> torch.Tensor:
    """[K, P, E] L2-normalised embeddings of each class line under each of the P templates."""
    names, owner = [], []
    for k, line in enumerate(lines):
        for name in synonyms(line):
            names.append(name)
            owner.append(k)
    texts = [template(name) for name in names for template in template_set]
    parts = []
    for i in range(0, len(texts), chunk):
        parts.append(F.normalize(clip.encode_text(tokenizer(texts[i:i + chunk]).to(device)).float(), dim=-1))
    per_name = torch.cat(parts).reshape(len(names), len(template_set), -1)
    summed = torch.zeros(len(lines), *per_name.shape[1:], device=per_name.device)
    summed.index_add_(0, torch.tensor(owner, device=per_name.device), per_name)
    return F.normalize(summed, dim=-1)
