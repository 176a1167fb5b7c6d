"""Zero-shot referring behind the engine's InstanceTileModel contract: one sentence, ranked SAM proposals.

A sentence is about the whole view, so the engine hands the region over as one tile. `encode` does
everything that depends on the view only: SAM's proposals and their CLIP global and local features
(cached together, so a second sentence on the same view runs the text tower and a few matrix products).
`decode_instances` scores the proposals against the sentence and its noun phrase, re-ranks them by
the sentence's spatial words and returns the best `top_k` as instances, with the same objects in the
logits: inside an object, the logit of its score; elsewhere a large negative logit.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ...execution.host_to_device import tiles_to_device
from ...execution.tile_model import NO_OBJECT_LOGIT, SIGMOID, Instance, instance_score_logit
from ..clip.tokens import sentence_notes
from .global_local import ScoringConfig, global_features, local_features, text_features, visual_features
from .parse import parse_sentence
from .proposals import ProposalConfig, Proposals, generate_proposals
from .spatial import rerank

# The score under which a pixel is unlabelled when the request sets none. Scores are shares of one
# softmax over all proposals, so even the best object can score far under 0.5; only objects the
# softmax gives (almost) nothing are dropped.
DEFAULT_THRESHOLD = 1e-4


class ZeroShotReferringTileModel:
    """InstanceTileModel over a shared CLIP and SAM; one instance per sentence."""

    def __init__(self, clip, tokenizer, sam, sentence: str, device: str, encoder_id: str,
                 mean: tuple[float, ...], std: tuple[float, ...], proposals: ProposalConfig,
                 scoring: ScoringConfig, top_k: Optional[int] = None):
        self.clip, self.sam, self.device, self.encoder_id = clip, sam, device, encoder_id
        self.proposal_config, self.scoring = proposals, scoring
        self.top_k = top_k or 1
        self.class_names = (sentence,)
        self.activation = SIGMOID
        self.n_inputs = 3
        self.whole_region = True
        self.threshold = DEFAULT_THRESHOLD
        self.parsed = parse_sentence(sentence)
        self._mean = torch.tensor(mean, device=device).view(3, 1, 1)
        self._std = torch.tensor(std, device=device).view(3, 1, 1)
        landmarks = [cue.landmark for cue in self.parsed.cues if cue.kind == "next_to" and cue.landmark]
        texts = [sentence, self.parsed.noun_phrase or sentence] + landmarks[:1]
        with torch.no_grad():
            embedded = text_features(clip, tokenizer, texts, device)
        beta = scoring.sentence_weight
        self._query = F.normalize(beta * embedded[0] + (1 - beta) * embedded[1], dim=-1)
        self._landmark = embedded[2] if landmarks else None
        self.notes = sentence_notes(tokenizer, sentence) + [
            f"the sentence was read as: target \u201c{self.parsed.noun_phrase or sentence}\u201d"
            + (f", position words: {', '.join(_cue_words(self.parsed.cues))}" if self.parsed.cues else "")]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(batch))

    @torch.no_grad()
    def encode(self, batch: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Views [B, 3, H, W] in 0..1 -> per view: the packed proposals and their global and local features."""
        per_view = [self._encode_view(tiles_to_device(view, self.device)) for view in batch]
        return tuple(torch.stack(field) for field in zip(*per_view))

    def _encode_view(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        found = generate_proposals(self.sam, image, self.proposal_config)
        normalised = (image - self._mean) / self._std
        height, width = image.shape[-2:]
        side = max(height, width)
        square = F.pad(normalised, (0, side - width, 0, side - height))  # 0: CLIP's mean colour
        view = F.interpolate(square[None], size=(self.scoring.global_size,) * 2, mode="bilinear",
                             align_corners=False, antialias=True)
        masks = F.pad(found.masks, (0, side - width, 0, side - height))
        global_feats = global_features(self.clip, view, masks, self.scoring)
        local_feats = local_features(self.clip, normalised, found.masks, found.boxes, self.scoring)
        return (*found.pack(), global_feats.cpu(), local_feats.cpu())

    def decode(self, features: Any) -> np.ndarray:
        return self.decode_instances(features)[0]

    @torch.no_grad()
    def decode_instances(self, features: Any) -> tuple[np.ndarray, list[list[Instance]]]:
        outputs = [self._decode_view(tuple(field[i] for field in features)) for i in range(len(features[0]))]
        return np.stack([logits for logits, _ in outputs]), [found for _, found in outputs]

    def _decode_view(self, fields: tuple[torch.Tensor, ...]) -> tuple[np.ndarray, list[Instance]]:
        proposals = Proposals.unpack(fields[:-2])
        height, width = proposals.masks.shape[-2:]
        logits = np.full((1, height, width), NO_OBJECT_LOGIT, np.float32)
        if len(proposals.masks) == 0:
            return logits, []
        visual = visual_features(fields[-2].float(), fields[-1].float(), self.scoring)
        probs = torch.softmax(self.scoring.logit_scale * (visual @ self._query), dim=0).numpy()
        landmark = None if self._landmark is None else (visual @ self._landmark).numpy()
        final = rerank(probs, self.parsed.cues, proposals.boxes.numpy(), proposals.areas.numpy(),
                       (height, width), landmark_scores=landmark)
        instances = []
        for rank, index in enumerate(np.argsort(-final, kind="stable")[:self.top_k], start=1):
            mask = proposals.masks[index].numpy()
            x0, y0, x1, y1 = _box(mask)
            score = float(final[index])
            inside = logits[0, y0:y1, x0:x1]
            crop = mask[y0:y1, x0:x1]
            inside[crop] = np.maximum(inside[crop], instance_score_logit(score))
            instances.append(Instance(0, score, x0, y0, crop.copy(), rank))
        return logits, instances


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The tight box (x0, y0, x1, y1, exclusive ends) of a non-empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


# How the result note words a cue: (graded, superlative)
_CUE_WORDS = {"left": ("on the left", "leftmost"), "right": ("on the right", "rightmost"),
              "top": ("at the top", "topmost"), "bottom": ("at the bottom", "bottommost"),
              "middle": ("in the middle", "most central"), "largest": ("large", "largest"),
              "smallest": ("small", "smallest")}


def _cue_words(cues) -> list[str]:
    """The position words as the model understood them, for the result's note."""
    words = []
    for cue in cues:
        if cue.kind == "ordinal":
            count = f"number {cue.ordinal}" if cue.ordinal > 0 else f"number {-cue.ordinal} from the end"
            words.append(f"{count}, counted from the {cue.origin}")
        elif cue.kind == "next_to":
            words.append(f"next to {cue.landmark}")
        else:
            words.append(_CUE_WORDS.get(cue.kind, (cue.kind, cue.kind))[cue.superlative])
    return words
