"""SAM 3's tokens: CLIP's BPE, 32 of them, and the attention mask Sam3Model reads.

Why two sources with one behaviour: the real model reads the hub's vocab.json / merges.txt from its
weights folder (verified with the weights, never fetched at run time); the tiny twin uses the BPE
vocabulary bundled with open_clip, which is the same vocabulary (the hub's two files are byte for
byte what open_clip's list spells out), so it runs with no files at all. Sam3Processor pads to 32
tokens and marks them in the attention mask; a longer text is cut to 32 with the end-of-text token
kept last, as CLIP's own tokenizer cuts (transformers' processor would fail on a 33rd position).
Padding is id 0 like open_clip's: the text encoder is causal and every later stage reads the mask,
so padded ids never reach the result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

import torch

PAD_ID = 0
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"


class Sam3Tokenizer:
    """Texts -> (ids [N, L], attention mask [N, L]); callable like open_clip's tokenizers (ids only), so the
    shared prompt-length notes (models/clip/tokens.py) measure what SAM 3 reads."""

    def __init__(self, encode: Callable[[str], list[int]], end_id: int, context_length: int):
        self._encode, self.end_id, self.context_length = encode, end_id, context_length

    def encode(self, texts: Sequence[str], context_length: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        length = context_length or self.context_length
        ids = torch.full((len(texts), length), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(texts), length), dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = self._encode(text)  # start and end tokens included
            if len(tokens) > length:
                tokens = tokens[:length - 1] + [self.end_id]
            ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, :len(tokens)] = 1
        return ids, mask

    def __call__(self, texts: str | Sequence[str], context_length: Optional[int] = None) -> torch.Tensor:
        return self.encode([texts] if isinstance(texts, str) else list(texts), context_length)[0]


def bundled_tokenizer(context_length: int) -> Sam3Tokenizer:
    """CLIP's BPE as open_clip bundles it (no files needed)."""
    from ..clip.builder import open_clip_module

    simple = open_clip_module().tokenizer.SimpleTokenizer(context_length=context_length)
    return Sam3Tokenizer(lambda text: [simple.sot_token_id, *simple.encode(text), simple.eot_token_id],
                         simple.eot_token_id, context_length)


def hub_tokenizer(vocab: Path, merges: Path, context_length: int) -> Sam3Tokenizer:
    """CLIP's BPE from the hub's vocab.json and merges.txt (transformers' CLIPTokenizer, from these files only)."""
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer(vocab=str(vocab), merges=str(merges))
    return Sam3Tokenizer(lambda text: list(tokenizer(text)["input_ids"]), int(tokenizer.eos_token_id), context_length)
