"""Zero-shot referring configurations as data (no torch import, so the registry reads them for free).

A config names its CLIP and its SAM (registry ids: their weights are the model's weights), the
proposal settings (proposals.ProposalConfig) and the scoring settings (global_local.ScoringConfig).
"""

from __future__ import annotations

# SAM ViT-B sees a 1024² view at once: SAM's own automatic-mask defaults, with more proposals kept
# (a map view holds more objects than a photo).
SAM_VIT_B_PROPOSALS = {"points_per_side": 32, "crop_n_layers": 0, "max_proposals": 100}
# LiteMedSAM was trained on box prompts only: points give it near-empty, unstable masks, so it is prompted with
# squares of 0.1 of the crop's side on a 16 x 16 grid, at the score levels it reaches on aerial views (measured on
# the SpaceNet Atlanta fixture, docs/zero-shot.md); its 256² input shrinks a 1024² view 4x, so one layer of
# crops gives small buildings back some size.
LITEMEDSAM_PROPOSALS = {"points_per_side": 16, "prompt": "boxes", "box_sizes": [0.1], "pred_iou_thresh": 0.5,
                        "stability_score_thresh": 0.5, "crop_n_layers": 1, "max_proposals": 150}
SCORING = {"global_size": 336, "mask_block": -3, "global_weight": 0.85, "sentence_weight": 0.5}
# SAM's mask decoder costs about 0.3 s per prompt point on one CPU core (1024 points: minutes for one view), so on
# a CPU the point grid is this much coarser; a GPU uses the full grid.
CPU_POINTS_PER_SIDE = 16

# Tiny twins: few points, a small global pass, so the whole chain runs in about a second on a CPU. With random
# weights, SAM's quality filters would keep nothing: they are switched off (every mask is a proposal).
TINY_PROPOSALS = {"points_per_side": 4, "points_per_batch": 16, "pred_iou_thresh": -1e9,
                  "stability_score_thresh": 0.0, "min_area_px": 1, "max_proposals": 12}
TINY_SCORING = {**SCORING, "global_size": 224, "mask_block": -1}


def config(clip: str, sam: str, proposals: dict, scoring: dict = SCORING) -> dict:
    return {"clip": clip, "sam": sam, "proposals": dict(proposals), "scoring": dict(scoring),
            "cpu_points_per_side": CPU_POINTS_PER_SIDE}
