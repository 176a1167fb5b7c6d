"""Sharpen per-pixel class logits with a SAM: region voting and confident-region prompts.

Why: SAM knows where objects end but not what they are; the open-vocabulary logits know what but
not exactly where. Two training-free ways to combine them:

- "peaks" (default): per class, every connected region the logits call that class is prompted
  with its box (and, optionally, its most confident point); where SAM's predicted IoU is high,
  SAM's mask decides inside the box: the class wins inside the mask and loses outside it. Meant
  for objects (buildings, trees, cars); regions whose box covers more than a quarter of the image
  (roads, "background") are left alone. One decoder call per region: cheap.
- "vote": SAM segments the image from a regular grid of prompts (a simplified
  SamAutomaticMaskGenerator: the prompts go through the prompt encoder and mask decoder in
  batches against one image embedding; masks are kept by predicted IoU and stability). The kept
  masks are painted into one region map, smaller masks over larger ones, so each pixel belongs to
  its finest region; inside a region, logits move towards the region's mean (`weight`). One
  decoder call per grid prompt: 30 s per 512² tile for 192 prompts on 2 CPU cores.

Thresholds default to SamAutomaticMaskGenerator's (0.88 predicted IoU, 0.95 stability), which suit
SAM ViT-B; LiteMedSAM's scores on aerial images are lower (see docs/refinement.md for the settings
measured with it).

The SAM is a segment_anything `Sam` as built by rsseg.models.sam (images in 0..1 units). Images of
any size are resized so their longer side equals the SAM's input size (256 for LiteMedSAM, 1024
for SAM ViT-B) and padded, as SAM does; masks come back bilinearly resized to the image. So a 512²
tile reaches LiteMedSAM at 256² (half resolution) and SAM ViT-B at 1024² (double). One band is
replicated to three; of more than three bands the first three are used.
Encode once, prompt many: `encode_image` returns the embedding, which `sam_refine` accepts; for
"vote", `region_map` + `vote_in_regions` let a caller keep the region map too.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

MODES = ("vote", "peaks")


def sam_input(sam: Any, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """[C,H,W] 0..1 -> the SAM's normalised, padded [1,3,S,S] input and the resized (h, w) in it."""
    if image.dim() != 3:
        raise ValueError(f"expected an image [C,H,W], got {tuple(image.shape)}")
    x = image.to(device=sam.device, dtype=torch.float32)
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else x[:3]
    if x.shape[0] != 3:
        raise ValueError(f"expected 1 or at least 3 bands, got {image.shape[0]}")
    resized = sam_input_size(sam, x.shape[-2:])
    x = F.interpolate(x[None], size=resized, mode="bilinear", align_corners=False,
                      antialias=resized[0] < x.shape[-2])
    return sam.preprocess(x), resized


@torch.no_grad()
def encode_image(sam: Any, image: torch.Tensor) -> torch.Tensor:
    """The SAM image embedding [1,D,g,g] of an image [C,H,W] in 0..1: the expensive part, cache it."""
    x, _ = sam_input(sam, image)
    return sam.image_encoder(x)


def sam_refine(logits: torch.Tensor, image: torch.Tensor, sam: Any, mode: str = "peaks", *,
               embedding: torch.Tensor | None = None, **options: Any) -> torch.Tensor:
    """Refined logits [K,H,W] for logits [K,H,W] and their image [C,H,W] (0..1, same H, W).

    `embedding`: encode_image(sam, image), if already computed. `options` go to the mode:
    peak_refine(classes, min_confidence, min_area, max_box_fraction, box_margin, iou_thresh,
    margin, point) or vote_refine(weight, min_agreement, and region_map's pred_iou_thresh,
    stability_thresh, min_area, prompt, points_per_side, box_sizes, points_per_batch).
    """
    if logits.dim() != 3 or logits.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"expected logits [K,H,W] matching the image's H, W; got {tuple(logits.shape)} "
                         f"and image {tuple(image.shape)}")
    if mode not in MODES:
        raise ValueError(f"unknown SAM refinement mode {mode!r}; expected one of {', '.join(MODES)}")
    if embedding is None:
        embedding = encode_image(sam, image)
    resized = sam_input_size(sam, image.shape[-2:])
    run = vote_refine if mode == "vote" else peak_refine
    with torch.no_grad():
        return run(logits, sam, embedding, resized, **options)


def sam_input_size(sam: Any, size: tuple[int, int] | torch.Size) -> tuple[int, int]:
    """The image's (h, w) once its longer side is the SAM's input size (SAM's ResizeLongestSide)."""
    h, w = size
    scale = sam.image_encoder.img_size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _decode(sam: Any, embedding: torch.Tensor, points: torch.Tensor | None, labels: torch.Tensor | None,
            boxes: torch.Tensor | None, multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of prompts against one embedding: low-res mask logits [N,M,4g,4g], IoU [N,M]."""
    sparse, dense = sam.prompt_encoder(points=None if points is None else (points, labels), boxes=boxes, masks=None)
    return sam.mask_decoder(image_embeddings=embedding, image_pe=sam.prompt_encoder.get_dense_pe(),
                            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                            multimask_output=multimask)


def _to_image(sam: Any, low_res: torch.Tensor, resized: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Low-res mask logits [N,1,4g,4g] -> boolean masks [N,H,W] on the image (unpadded, resized)."""
    return sam.postprocess_masks(low_res, resized, size)[:, 0] > sam.mask_threshold


def stability_score(mask_logits: torch.Tensor, threshold: float, offset: float = 1.0) -> torch.Tensor:
    """SAM's stability: IoU of the masks thresholded at threshold +- offset (1 = crisp)."""
    inner = (mask_logits > threshold + offset).flatten(-2).sum(-1).float()
    outer = (mask_logits > threshold - offset).flatten(-2).sum(-1).float()
    return inner / outer.clamp_min(1)


def prompt_grid(resized: tuple[int, int], points_per_side: int) -> torch.Tensor:
    """A points_per_side² grid of (x, y) cell centres over the resized image, [N,2] in SAM input pixels."""
    rh, rw = resized
    ys = (torch.arange(points_per_side, dtype=torch.float32) + 0.5) / points_per_side * rh
    xs = (torch.arange(points_per_side, dtype=torch.float32) + 0.5) / points_per_side * rw
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)


def automatic_masks(sam: Any, embedding: torch.Tensor, resized: tuple[int, int], size: tuple[int, int],
                    prompt: str = "points", points_per_side: int = 16, box_sizes: Sequence[float] = (32, 64),
                    points_per_batch: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masks for a regular grid of prompts: (low-res logits [N,4g,4g], predicted IoU [N], stability [N]).

    prompt="points": a points_per_side² grid of single positive points, three masks each (SAM's
    automatic mask generator). prompt="boxes": a square box of each of `box_sizes` (image pixels)
    centred on every grid point, one mask each; for SAMs trained on box prompts only (MedSAM and
    LiteMedSAM return near-empty masks for points). The decoder runs once per prompt (~0.2 s
    per prompt for LiteMedSAM on 2 CPU cores): this is the cost of "vote".
    """
    if prompt not in ("points", "boxes"):
        raise ValueError(f"unknown prompt kind {prompt!r}; expected 'points' or 'boxes'")
    grid = prompt_grid(resized, points_per_side).to(sam.device)
    if prompt == "boxes":
        scale = resized[0] / size[0]
        half = torch.tensor([s * scale / 2 for s in box_sizes], device=sam.device).repeat_interleave(len(grid))
        centres = grid.repeat(len(box_sizes), 1)
        limit = torch.tensor([resized[1], resized[0]], device=sam.device, dtype=torch.float32)
        prompts = torch.cat([torch.minimum((centres - half[:, None]).clamp_min(0), limit),
                             torch.minimum(centres + half[:, None], limit)], 1)
    else:
        prompts = grid[:, None]
    lows, ious = [], []
    for start in range(0, prompts.shape[0], points_per_batch):
        batch = prompts[start:start + points_per_batch]
        if prompt == "boxes":
            low, iou = _decode(sam, embedding, None, None, batch, False)
        else:
            low, iou = _decode(sam, embedding, batch, torch.ones(batch.shape[:2], device=sam.device), None, True)
        lows.append(low.flatten(0, 1))
        ious.append(iou.flatten())
    low = torch.cat(lows)
    return low, torch.cat(ious), stability_score(low, sam.mask_threshold)


def paint_regions(sam: Any, low: torch.Tensor, resized: tuple[int, int], size: tuple[int, int],
                  min_area: int = 16) -> torch.Tensor:
    """Low-res mask logits [N,4g,4g] -> region id per pixel [H,W] (-1: none), largest painted first
    so that smaller (finer) masks win where masks nest."""
    labels = torch.full(tuple(size), -1, dtype=torch.long, device=low.device)
    if low.shape[0] == 0:
        return labels
    masks = torch.cat([_to_image(sam, low[i:i + 32, None], resized, size) for i in range(0, low.shape[0], 32)])
    areas = masks.flatten(1).sum(1)
    region = 0
    for i in torch.argsort(areas, descending=True).tolist():
        if areas[i] >= min_area:
            labels[masks[i]] = region
            region += 1
    return labels


def region_map(sam: Any, embedding: torch.Tensor, resized: tuple[int, int], size: tuple[int, int],
               pred_iou_thresh: float = 0.88, stability_thresh: float = 0.95, min_area: int = 16,
               **prompt_options: Any) -> torch.Tensor:
    """SAM's automatic segmentation as a region id per pixel [H,W] (int64; -1 where no mask): the
    automatic_masks (prompt_options) that pass on predicted IoU and stability, painted."""
    low, iou, stability = automatic_masks(sam, embedding, resized, size, **prompt_options)
    good = (iou >= pred_iou_thresh) & (stability >= stability_thresh)
    return paint_regions(sam, low[good], resized, size, min_area)


def vote_refine(logits: torch.Tensor, sam: Any, embedding: torch.Tensor, resized: tuple[int, int],
                weight: float = 1.0, min_agreement: float = 0.0, **region_options: Any) -> torch.Tensor:
    """Each SAM region's logits move towards the region's mean (see vote_in_regions)."""
    labels = region_map(sam, embedding, resized, tuple(logits.shape[-2:]), **region_options).to(logits.device)
    return vote_in_regions(logits, labels, weight, min_agreement)


def vote_in_regions(logits: torch.Tensor, labels: torch.Tensor, weight: float = 1.0,
                    min_agreement: float = 0.0) -> torch.Tensor:
    """Blend logits [K,H,W] towards the mean logits of their region (labels [H,W], -1 = left alone).

    out = (1 - weight) * logits + weight * region mean. Regions where fewer than `min_agreement`
    of the pixels already have the argmax of the region's mean are left alone: a SAM region that
    straddles two classes would otherwise hand all of it to the larger one.
    """
    inside = labels >= 0
    if weight == 0 or not inside.any():
        return logits.clone()
    k = logits.shape[0]
    ids = labels[inside]
    n = int(ids.max()) + 1
    flat = logits[:, inside]                                                    # [K,P]
    sums = torch.zeros(k, n, dtype=logits.dtype, device=logits.device).index_add_(1, ids, flat)
    counts = torch.bincount(ids, minlength=n).clamp_min(1).to(logits.dtype)
    means = sums / counts
    winner = means.argmax(0)                                                    # [n]
    agree = torch.zeros(n, dtype=logits.dtype, device=logits.device).index_add_(
        0, ids, (flat.argmax(0) == winner[ids]).to(logits.dtype)) / counts
    blend = weight * (agree >= min_agreement).to(logits.dtype)[ids]             # [P]
    out = logits.clone()
    out[:, inside] = (1 - blend) * flat + blend * means[:, ids]
    return out


def peak_refine(logits: torch.Tensor, sam: Any, embedding: torch.Tensor, resized: tuple[int, int],
                classes: Sequence[int] | None = None, min_confidence: float = 0.5, min_area: int = 16,
                max_box_fraction: float = 0.25, box_margin: float = 0.1, iou_thresh: float = 0.88,
                margin: float = 1.0, point: bool = True, points_per_batch: int = 16) -> torch.Tensor:
    """Per class, prompt SAM with each confident region's box and peak; trust masks with high IoU.

    A confident region is a connected component of pixels whose argmax is the class with softmax
    probability >= min_confidence. Its box (grown by box_margin of its size) and its most
    confident pixel (`point`; off for box-only SAMs such as LiteMedSAM) are the prompt. Masks
    with predicted IoU >= iou_thresh decide inside the box: in the mask the class's logit is
    raised to `margin` above the best other class; in the box but outside the mask, where the
    class was winning, it is lowered to `margin` below the runner-up. All demotions are applied
    before all promotions, so neighbouring regions' boxes do not erase each other's masks.
    """
    from scipy import ndimage  # connected components; scipy is a backend dependency

    k, h, w = logits.shape
    probs = logits.float().softmax(0)
    top = probs.max(0)
    scale_y, scale_x = resized[0] / h, resized[1] / w
    prompts: list[tuple[int, tuple[int, int, int, int], tuple[int, int]]] = []
    for c in range(k) if classes is None else classes:
        confident = ((top.indices == c) & (top.values >= min_confidence)).cpu().numpy()
        components, count = ndimage.label(confident)
        for index, slices in enumerate(ndimage.find_objects(components), start=1):
            if slices is None:
                continue
            ys, xs = slices
            part = components[slices] == index
            if part.sum() < min_area or (ys.stop - ys.start) * (xs.stop - xs.start) > max_box_fraction * h * w:
                continue
            local = np.where(part, probs[c, ys, xs].cpu().numpy(), -1.0)
            py, px = np.unravel_index(int(local.argmax()), local.shape)
            my, mx = box_margin * (ys.stop - ys.start), box_margin * (xs.stop - xs.start)
            box = (int(max(0, xs.start - mx)), int(max(0, ys.start - my)),
                   int(min(w, xs.stop + mx + 0.5)), int(min(h, ys.stop + my + 0.5)))
            prompts.append((c, box, (ys.start + py, xs.start + px)))
    out = logits.clone()
    if not prompts or k < 2:
        return out
    promote = torch.zeros(k, h, w, dtype=torch.bool, device=logits.device)
    demote = torch.zeros_like(promote)
    for start in range(0, len(prompts), points_per_batch):
        batch = prompts[start:start + points_per_batch]
        boxes = torch.tensor([[x0 * scale_x, y0 * scale_y, x1 * scale_x, y1 * scale_y]
                              for _, (x0, y0, x1, y1), _ in batch], dtype=torch.float32, device=sam.device)
        points = torch.tensor([[[(px + 0.5) * scale_x, (py + 0.5) * scale_y]] for _, _, (py, px) in batch],
                              dtype=torch.float32, device=sam.device)
        labels = torch.ones(points.shape[:2], device=sam.device)
        low, iou = _decode(sam, embedding, points if point else None, labels if point else None, boxes, False)
        masks = _to_image(sam, low, resized, (h, w)).to(logits.device)
        for (c, (x0, y0, x1, y1), _), mask, score in zip(batch, masks, iou[:, 0].tolist()):
            if score < iou_thresh:
                continue
            promote[c] |= mask
            in_box = torch.zeros(h, w, dtype=torch.bool, device=logits.device)
            in_box[y0:y1, x0:x1] = True
            demote[c] |= in_box & ~mask
    for c in range(k):
        best_other = torch.cat([out[:c], out[c + 1:]]).max(0).values
        winning = out[c] >= best_other
        lower = demote[c] & ~promote[c] & winning
        out[c] = torch.where(lower, torch.minimum(out[c], best_other - margin), out[c])
    for c in range(k):
        best_other = torch.cat([out[:c], out[c + 1:]]).max(0).values
        out[c] = torch.where(promote[c], torch.maximum(out[c], best_other + margin), out[c])
    return out
