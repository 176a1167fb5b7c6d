"""Text side of the open-vocabulary model: class lines with synonyms, prompt templates, embeddings.

A class is one prompt line whose comma-separated names are synonyms ("road, parking lot"). Each
name is embedded as the mean of its template embeddings (the 80 ImageNet templates of CLIP);
a class scores as its best-matching synonym, so adding a synonym can never lower its score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...compat import ensure_torchvision
from ..prompts import synonyms

ensure_torchvision()  # open_clip imports torchvision, whose C++ operators a CPU-only torch lacks

try:  # open_clip's own copy of CLIP's 80 ImageNet templates
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES as IMAGENET_TEMPLATES
except ImportError:  # pragma: no cover - very old open_clip
    IMAGENET_TEMPLATES = (lambda c: f"a photo of a {c}.",)


@torch.no_grad()
def name_embeddings(clip, tokenizer, names: list[str], templates=IMAGENET_TEMPLATES,
                    device: str = "cpu", chunk: int = 256) -> torch.Tensor:
    """[N, E] L2-normalised embeddings: per name, the normalised mean of its normalised template embeddings."""
    texts = [template(name) for name in names for template in templates]
    parts = []
    for i in range(0, len(texts), chunk):
        tokens = tokenizer(texts[i:i + chunk]).to(device)
        parts.append(F.normalize(clip.encode_text(tokens).float(), dim=-1))
    per_template = torch.cat(parts).reshape(len(names), len(templates), -1)
    return F.normalize(per_template.mean(dim=1), dim=-1)


def class_embeddings(clip, tokenizer, lines: list[str], templates=IMAGENET_TEMPLATES,
                     device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings [S, E] of every synonym, owner [S]: the class index of each synonym)."""
    names, owner = [], []
    for index, line in enumerate(lines):
        for name in synonyms(line):
            names.append(name)
            owner.append(index)
    return name_embeddings(clip, tokenizer, names, templates, device), torch.tensor(owner, device=device)


def class_logits(similarity: torch.Tensor, owner: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Per-synonym scores [B, S, ...] -> per-class scores [B, K, ...]: the max over each class's synonyms."""
    shape = (similarity.shape[0], n_classes) + tuple(similarity.shape[2:])
    index = owner.view(1, -1, *([1] * (similarity.dim() - 2))).expand_as(similarity)
    out = torch.full(shape, float("-inf"), dtype=similarity.dtype, device=similarity.device)
    return out.scatter_reduce(1, index, similarity, reduce="amax", include_self=True)
