"""SAM automatic mask proposals for one map view: the candidate regions the zero-shot referring model ranks.

Why not `SamAutomaticMaskGenerator`: our Sams take images in [0, 1] units (rsseg.models.sam.configs),
while its `SamPredictor.set_image` feeds 0..255, and it returns RLE dicts through numpy. This is the
same algorithm on tensors, built from segment_anything's own helpers (`utils.amg`): a grid of single
positive points per crop, three masks per point, kept when predicted IoU > `pred_iou_thresh` and
stability >= `stability_score_thresh`, masks touching an inner crop edge dropped, box NMS within a
crop (by predicted IoU), then across crops (masks of smaller crops win, as in SAM), then the best
`max_proposals` by predicted IoU x stability.

Memory stays bounded: the decoder's low-res logits are filtered by predicted IoU per point batch,
upsampled to the crop a few masks at a time, thresholded, and kept only as the bool pixels inside
their box. NMS runs after each batch on what is kept so far, so duplicates never pile up (this can
differ from one NMS at the end of a crop when a suppressor is itself suppressed later: it is still
deterministic). Full-size [N, H, W] masks exist only for the final proposals.

SAMs trained on box prompts only (MedSAM, LiteMedSAM) return near-empty, unstable masks for points
(stability 0 on the Atlanta fixture): `prompt="boxes"` prompts each grid point with a square instead, one
mask per square, its side `box_sizes` times the crop's longer side. Sizes are fractions so that a box
is the same size in the SAM's input whatever the view, its crop or the SAM's input size; crops then
give smaller boxes in view pixels, as they give denser points. LiteMedSAM segments what a box holds
best when the box is 1.5-2x the object (on Atlanta: 0.1 of a 500 px view for 15-25 m buildings).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...progress import CancelToken

PROMPTS = ("points", "boxes")
_UPSAMPLE_FLOATS = 1 << 24  # mask logits upsampled at once (64 MB): SAM's input square, then the crop


def _amg() -> Any:
    # segment_anything imports torchvision, whose C++ ops may not match a CPU torch.
    from ...compat.torchvision_ops import ensure_torchvision

    ensure_torchvision()
    import segment_anything.utils.amg as amg

    return amg


def _batched_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    from ...compat.torchvision_ops import ensure_torchvision

    ensure_torchvision()
    from torchvision.ops import batched_nms

    return batched_nms(boxes.float(), scores.float(), torch.zeros_like(scores, dtype=torch.long), threshold)


@dataclass(frozen=True)
class ProposalConfig:
    """SamAutomaticMaskGenerator's settings (same names and defaults), plus the proposal budget."""

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0  # layer k splits the view into (2^k)^2 overlapping crops, each encoded at SAM's input size
    crop_overlap_ratio: float = 512 / 1500
    crop_nms_thresh: float = 0.7
    crop_n_points_downscale_factor: int = 1  # layer k has points_per_side / factor^k points per side
    min_area_px: int = 16  # smaller masks are dropped (in view pixels)
    max_proposals: int = 100  # the best (by predicted IoU x stability) after NMS
    prompt: str = "points"  # "points": SAM's grid of positive points; "boxes": squares around them
    box_sizes: tuple[float, ...] = field(default=(0.1,))  # "boxes": square sides / the crop's longer side

    def __post_init__(self) -> None:
        if self.prompt not in PROMPTS:
            raise ValueError(f"unknown proposal prompt {self.prompt!r}; expected one of {', '.join(PROMPTS)}")
        if self.points_per_side < 1 or self.points_per_batch < 1 or self.max_proposals < 0 or self.crop_n_layers < 0:
            raise ValueError(f"points_per_side and points_per_batch must be >= 1, max_proposals and crop_n_layers "
                             f">= 0: {self}")
        if self.prompt == "boxes" and (not self.box_sizes or not all(0 < s <= 1 for s in self.box_sizes)):
            raise ValueError(f"box_sizes must be fractions of the crop's longer side in (0, 1], got {self.box_sizes!r}")
        object.__setattr__(self, "box_sizes", tuple(float(s) for s in self.box_sizes))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProposalConfig":
        """From a model config or request options; keys that are not settings here are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Proposals:
    """Masks of one view (bool [N, H, W]) with their boxes (x0, y0, x1, y1 in view pixels, x1/y1
    exclusive, so `image[:, y0:y1, x0:x1]` is the mask's crop) and SAM's two quality scores."""

    masks: torch.Tensor
    boxes: torch.Tensor
    predicted_iou: torch.Tensor
    stability: torch.Tensor

    def __post_init__(self) -> None:
        n = self.masks.shape[0]
        if self.masks.dim() != 3 or self.masks.dtype != torch.bool:
            raise ValueError(f"masks must be bool [N, H, W], got {self.masks.dtype} {tuple(self.masks.shape)}")
        if self.boxes.shape != (n, 4) or self.predicted_iou.shape != (n,) or self.stability.shape != (n,):
            raise ValueError(f"{n} masks need boxes [N, 4] and scores [N]: got {tuple(self.boxes.shape)}, "
                             f"{tuple(self.predicted_iou.shape)}, {tuple(self.stability.shape)}")

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """The view's (H, W)."""
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    @property
    def areas(self) -> torch.Tensor:
        """Pixel count per mask [N] (int64)."""
        return self.masks.flatten(1).sum(1)

    @classmethod
    def empty(cls, size: tuple[int, int], device: torch.device | str = "cpu") -> "Proposals":
        h, w = size
        return cls(torch.zeros(0, h, w, dtype=torch.bool, device=device), torch.zeros(0, 4, device=device),
                   torch.zeros(0, device=device), torch.zeros(0, device=device))

    def pack(self) -> tuple[torch.Tensor, ...]:
        """(bits uint8 [N, ceil(H*W/8)], boxes, predicted_iou, stability, size int64 [2]) on the CPU: masks
        take 1 bit a pixel, so a feature cache holds proposals of many views."""
        h, w = self.size
        masks = self.masks.cpu().numpy().reshape(len(self), h * w)  # -1 fails for N = 0
        bits = torch.from_numpy(np.packbits(masks, axis=1))
        return (bits, self.boxes.cpu(), self.predicted_iou.cpu(), self.stability.cpu(),
                torch.tensor(self.size, dtype=torch.long))

    @classmethod
    def unpack(cls, packed: tuple[torch.Tensor, ...]) -> "Proposals":
        """The inverse of `pack` (on the CPU)."""
        bits, boxes, predicted_iou, stability, size = packed
        h, w = (int(v) for v in size.tolist())
        masks = np.unpackbits(bits.numpy(), axis=1, count=h * w).reshape(bits.shape[0], h, w).astype(bool)
        return cls(torch.from_numpy(masks), boxes, predicted_iou, stability)


@dataclass
class _Kept:
    """Candidates so far: boxes in view pixels (exclusive ends), scores, the area of the crop each came
    from, and each mask as its bool pixels inside its box."""

    boxes: torch.Tensor
    predicted_iou: torch.Tensor
    stability: torch.Tensor
    crop_area: torch.Tensor
    pieces: list[torch.Tensor]

    @classmethod
    def empty(cls, device: torch.device) -> "_Kept":
        zeros = torch.zeros(0, device=device)
        return cls(torch.zeros(0, 4, device=device), zeros, zeros, zeros, [])

    def __len__(self) -> int:
        return len(self.pieces)

    def cat(self, other: "_Kept") -> "_Kept":
        return _Kept(torch.cat([self.boxes, other.boxes]), torch.cat([self.predicted_iou, other.predicted_iou]),
                     torch.cat([self.stability, other.stability]), torch.cat([self.crop_area, other.crop_area]),
                     self.pieces + other.pieces)

    def take(self, index: torch.Tensor) -> "_Kept":
        rows = index.tolist()
        return _Kept(self.boxes[index], self.predicted_iou[index], self.stability[index], self.crop_area[index],
                     [self.pieces[i] for i in rows])


def _grid_prompts(grid: np.ndarray, crop_hw: tuple[int, int], config: ProposalConfig,
                  device: torch.device) -> torch.Tensor:
    """Prompts in crop pixels: points [P, 2] (x, y), or squares [P * len(box_sizes), 4] centred on them."""
    ch, cw = crop_hw
    points = torch.as_tensor(grid * np.array([[cw, ch]]), dtype=torch.float32, device=device)
    if config.prompt == "points":
        return points
    half = torch.tensor(config.box_sizes, device=device).repeat_interleave(len(points))[:, None] * max(ch, cw) / 2
    centres = points.repeat(len(config.box_sizes), 1)
    limit = torch.tensor([cw, ch], dtype=torch.float32, device=device)
    return torch.cat([(centres - half).clamp_min(0), torch.minimum(centres + half, limit)], 1)


def _decode(sam: Any, embedding: torch.Tensor, prompts: torch.Tensor, config: ProposalConfig
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of prompts (in SAM input pixels) -> low-res logits [n*M, 4g, 4g] and predicted IoU [n*M]."""
    if config.prompt == "points":
        labels = torch.ones(prompts.shape[0], 1, dtype=torch.int, device=prompts.device)
        sparse, dense = sam.prompt_encoder(points=(prompts[:, None, :], labels), boxes=None, masks=None)
    else:
        sparse, dense = sam.prompt_encoder(points=None, boxes=prompts, masks=None)
    low, iou = sam.mask_decoder(image_embeddings=embedding, image_pe=sam.prompt_encoder.get_dense_pe(),
                                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                multimask_output=config.prompt == "points")
    return low.flatten(0, 1), iou.flatten(0, 1)


def _crop_candidates(sam: Any, image: torch.Tensor, crop_box: list[int], grid: np.ndarray, config: ProposalConfig,
                     cancel: CancelToken | None) -> _Kept:
    """SAM's `_process_crop` + `_process_batch` for one crop, masks kept as box-sized pieces."""
    amg = _amg()
    from segment_anything.utils.transforms import ResizeLongestSide

    h, w = image.shape[-2:]
    x0, y0, x1, y1 = crop_box
    crop_hw = (y1 - y0, x1 - x0)
    size = int(sam.image_encoder.img_size)
    resized = ResizeLongestSide.get_preprocess_shape(crop_hw[0], crop_hw[1], size)
    crop = image[None, :, y0:y1, x0:x1]
    # ResizeLongestSide.apply_image_torch reads H, W from the wrong axes (B, C): resize here instead.
    crop = F.interpolate(crop, resized, mode="bilinear", align_corners=False, antialias=True)
    embedding = sam.image_encoder(sam.preprocess(crop))
    transform = ResizeLongestSide(size)
    prompts = _grid_prompts(grid, crop_hw, config, image.device)
    prompts = (transform.apply_coords_torch(prompts, crop_hw) if config.prompt == "points"
               else transform.apply_boxes_torch(prompts, crop_hw))
    offset = torch.tensor([x0, y0, x0, y0], dtype=torch.float32, device=image.device)
    crop_area = float(crop_hw[0] * crop_hw[1])
    chunk_size = max(1, _UPSAMPLE_FLOATS // max(size * size, crop_hw[0] * crop_hw[1]))
    kept = _Kept.empty(image.device)
    for (batch,) in amg.batch_iterator(config.points_per_batch, prompts):
        if cancel is not None:
            cancel.check()
        low, iou = _decode(sam, embedding, batch, config)
        good = iou > config.pred_iou_thresh
        low, iou = low[good], iou[good]
        new = _Kept.empty(image.device)
        for start in range(0, low.shape[0], chunk_size):
            logits = sam.postprocess_masks(low[start:start + chunk_size, None], resized, crop_hw)[:, 0]
            stability = amg.calculate_stability_score(logits, sam.mask_threshold, config.stability_score_offset)
            masks = logits > sam.mask_threshold
            del logits
            boxes = amg.batched_mask_to_box(masks)  # inclusive ends, crop pixels
            ok = ((stability >= config.stability_score_thresh)
                  & (masks.flatten(1).sum(1) >= max(config.min_area_px, 1))
                  & ~amg.is_box_near_crop_edge(boxes, crop_box, [0, 0, w, h]))
            index = ok.nonzero()[:, 0]
            pieces = [masks[i, b[1]:b[3] + 1, b[0]:b[2] + 1].clone()
                      for i, b in zip(index.tolist(), boxes[index].long().tolist())]
            chunk = _Kept(boxes[index].float() + offset + torch.tensor([0, 0, 1, 1], device=image.device),
                          iou[start:start + chunk_size][index], stability[index],
                          torch.full((len(pieces),), crop_area, device=image.device), pieces)
            new = new.cat(chunk)
        if len(new):
            kept = kept.cat(new)
            kept = kept.take(_batched_nms(kept.boxes, kept.predicted_iou, config.box_nms_thresh))
    return kept


def _paste(kept: _Kept, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    masks = torch.zeros(len(kept), *size, dtype=torch.bool, device=device)
    for i, (piece, box) in enumerate(zip(kept.pieces, kept.boxes.long().tolist())):
        masks[i, box[1]:box[3], box[0]:box[2]] = piece
    return masks


def _crops(size: tuple[int, int], config: ProposalConfig) -> list[tuple[list[int], int, np.ndarray]]:
    """SAM's crop boxes (x0, y0, x1, y1) of the view, layer by layer, each with its layer and point grid (0..1).
    A layer's crops and grid do not depend on how many layers follow it."""
    amg = _amg()
    boxes, layers = amg.generate_crop_boxes(size, config.crop_n_layers, config.crop_overlap_ratio)
    grids = amg.build_all_layer_point_grids(config.points_per_side, config.crop_n_layers,
                                            config.crop_n_points_downscale_factor)
    return [(box, layer, grids[layer]) for box, layer in zip(boxes, layers)]


def _select(per_crop: list[_Kept], size: tuple[int, int], config: ProposalConfig, device: torch.device) -> Proposals:
    """Candidates of every crop -> NMS across crops -> the best `max_proposals` as full-size masks."""
    kept = _Kept.empty(device)
    for crop in per_crop:
        kept = kept.cat(crop)
    if len(per_crop) > 1 and len(kept):  # across crops the mask from the smaller (finer) crop wins
        kept = kept.take(_batched_nms(kept.boxes, 1 / kept.crop_area, config.crop_nms_thresh))
    order = torch.sort(kept.predicted_iou * kept.stability, descending=True, stable=True).indices
    kept = kept.take(order[:config.max_proposals])
    if not len(kept):
        return Proposals.empty(size, device)
    return Proposals(_paste(kept, size, device), kept.boxes, kept.predicted_iou, kept.stability)


@torch.no_grad()
def generate_proposals(sam: Any, image: torch.Tensor, config: ProposalConfig = ProposalConfig(),
                       cancel: CancelToken | None = None) -> Proposals:
    """image [3, H, W] float in 0..1 on the SAM's device (any H, W: resized by the longest side and padded as
    SAM does, masks brought back to H x W). `cancel.check()` runs between point batches."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image [3, H, W], got {tuple(image.shape)}")
    image = image.to(device=sam.device, dtype=torch.float32)
    size = (int(image.shape[1]), int(image.shape[2]))
    per_crop = [_crop_candidates(sam, image, box, grid, config, cancel) for box, _, grid in _crops(size, config)]
    return _select(per_crop, size, config, image.device)
