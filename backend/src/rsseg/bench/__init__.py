"""`rsseg bench`: engine throughput and memory on synthetic rasters, printed as a table.

Each run happens in its own process (peak RSS is per process); model time is measured inside
the engine, so the "outside model" share is I/O, normalisation, blending, writing and
vectorising. Peak RSS is reported for the raster pass (read, model, blend, write) and for the
whole job: vectorising holds a region's pieces until it is complete (inside a block of the region
grid), so a class that forms one network (roads, say) costs memory. A second table sets the `test`
rows against their yardsticks: GDAL's own tools doing the job's I/O on the same raster, and the
smallest raster's peak RSS.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics

# Runs this same interpreter on our own module, without a shell.
import subprocess  # nosec B404
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from ..protocol.contracts import DEFAULT_MODELS
from .synthetic import write_synthetic

# Real architectures with random weights, built by bench/__main__.py: the class-list path of clip-vit-b-16,
# RSRefSeg on the architecture of the registry's weights (OpenAI CLIP ViT-B/16 + SAM ViT-B at 1024,
# rsrefseg/configs.py CLIP_B16_SAM_B) with random seeded weights, and zero-shot referring (the default sentence
# model: SAM ViT-B proposals ranked by CLIP ViT-B/16), with SAM's quality filters off so that random weights
# still fill the proposal budget the real model works with; and RFM-Seg (rfm-seg-r18-rn50: a ResNet-18 UNetFormer
# host and RemoteCLIP RN50, random seeded weights), a second time with other VL-map prompts; and SGSeg
# (sgseg-vit-b-16: OpenAI CLIP ViT-B/16 at 384-px windows plus a global view, random seeded weights), a second
# time with another class list (cached image features).
CLIP_RANDOM = f"{DEFAULT_MODELS['classes']}-random"
RSREFSEG_RANDOM = "rsrefseg-clip-b16-sam-b-random"
ZS_REF_RANDOM = f"{DEFAULT_MODELS['sentence']}-random"
RFM_RANDOM = "rfm-seg-r18-rn50-random"
SGSEG_RANDOM = "sgseg-vit-b-16-random"


def _run_one(raster: Path, out: Path, model: str, tile: int, overlap: int, device: str, kind: str = "smooth") -> dict:
    cmd = [sys.executable, "-m", "rsseg.bench", str(raster), str(out), model, str(tile), str(overlap), device, kind]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # nosec B603
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark run failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def gdal_reference(raster: Path, work: Path) -> Optional[float]:
    """Seconds GDAL's own tools take for the I/O a job needs: read the raster, classify each pixel, write a
    DEFLATE-tiled uint8 mask (gdal_calc.py), polygonise it to a GeoPackage (gdal_polygonize.py); None when
    gdal-bin is not installed. The yardstick of the engine's speed (docs/benchmarks.md)."""
    tools = [shutil.which(t) for t in ("gdal_calc.py", "gdal_polygonize.py")]
    if not all(tools):
        return None
    mask, polygons = work / "reference_mask.tif", work / "reference.gpkg"
    for leftover in (mask, polygons):
        leftover.unlink(missing_ok=True)
    # Debian's GDAL Python: not this environment's GDAL and PROJ data
    env = {k: v for k, v in os.environ.items() if k not in ("GDAL_DATA", "PROJ_LIB", "PROJ_DATA", "PYTHONPATH")}
    steps = [[tools[0], "--quiet", "-A", str(raster), "--A_band=1", "-B", str(raster), "--B_band=2",
              f"--outfile={mask}", "--type=Byte", "--co", "TILED=YES", "--co", "COMPRESS=DEFLATE",
              "--calc=1+(A>B)+(A>128)"],
             [tools[1], "-q", str(mask), "-f", "GPKG", str(polygons)]]
    t0 = time.perf_counter()
    for step in steps:
        subprocess.run(step, capture_output=True, check=True, env=env)  # nosec B603 - GDAL's tools, no shell
    wall = time.perf_counter() - t0
    for leftover in (mask, polygons):
        leftover.unlink(missing_ok=True)
    return wall


def _row(model: str, size: int, run: dict) -> dict:
    wall, t = run["wall_s"], run["timings"]
    return {"model": model, "device": run["device"], "raster": f"{size}x{size}", "tiles": run["tiles"],
            "wall_s": round(wall, 2),
            "tiles_per_s": round(run["tiles"] / wall, 2), "mpx_per_s": round(run["pixels"] / wall / 1e6, 2),
            "raster_pass_rss_mb": round(run["raster_pass_rss_mb"]), "peak_rss_mb": round(run["peak_rss_mb"]),
            "polygons": run["polygons"], "outside_model_pct": round(100 * (wall - t["model"]) / wall, 1),
            "read_s": round(t.get("read", 0), 2), "blend_write_s": round(t.get("blend", 0) + t.get("write", 0), 2),
            "vectorise_s": round(t.get("vectorise", 0), 2)}


COLUMNS = ["model", "device", "raster", "tiles", "wall_s", "tiles_per_s", "mpx_per_s", "raster_pass_rss_mb",
           "peak_rss_mb", "polygons", "outside_model_pct", "read_s", "blend_write_s", "vectorise_s"]


def format_table(rows: list[dict], markdown: bool, columns: Optional[list[str]] = None) -> str:
    columns = columns or COLUMNS
    cells = [columns] + [[str(r[c]) for c in columns] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(columns)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells[1:]])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells)


def yardsticks(rows: list[dict], references: dict[int, Optional[float]]) -> list[dict]:
    """The `test` model's rows against their yardsticks: the GDAL reference pipeline on the same raster
    (ratio of wall times) and the smallest raster of their kind (ratio of the whole job's peak RSS)."""
    out = []
    for kind in ("", " speckle"):
        mine = [r for r in rows if r["model"] == f"test{kind}"]
        for r in mine:
            size = int(r["raster"].split("x")[0])
            reference = references.get(size) if not kind else None
            out.append({"raster": r["raster"] + kind, "wall_s": r["wall_s"],
                        "gdal_reference_s": round(reference, 2) if reference else "n/a",
                        "ratio_to_gdal": round(r["wall_s"] / reference, 2) if reference else "n/a",
                        "peak_rss_mb": r["peak_rss_mb"],
                        "rss_ratio_to_smallest": round(r["peak_rss_mb"] / mine[0]["peak_rss_mb"], 2)})
    return out


BATCH_COLUMNS = ["workers", "rasters", "wall_s", "mpx_per_s", "speedup", "ray_start_s", "done"]
YARDSTICK_COLUMNS = ["raster", "wall_s", "gdal_reference_s", "ratio_to_gdal", "peak_rss_mb", "rss_ratio_to_smallest"]


def run_bench(args) -> int:
    sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    speckle_sizes = [int(s) for s in str(getattr(args, "speckle_sizes", "")).split(",") if s.strip()]
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="rsseg-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    # (model, raster size, tile, overlap): a referring model runs one tile of the whole square raster (no
    # overlap), so its rows mean the same whether the engine tiles sentence models or hands them the region whole.
    rsrefseg_size = getattr(args, "rsrefseg_size", 0)
    tiled = (args.tile, args.overlap)
    plan = [("test", s, *tiled) for s in sizes] + [("test speckle", s, *tiled) for s in speckle_sizes] \
        + ([("vit-b-random", args.vit_size, *tiled)] if args.vit_size else []) \
        + ([(CLIP_RANDOM, args.clip_size, *tiled)] if args.clip_size else []) \
        + ([(RFM_RANDOM, args.rfm_size, *tiled)] if getattr(args, "rfm_size", 0) else []) \
        + ([(SGSEG_RANDOM, args.sgseg_size, *tiled)] if getattr(args, "sgseg_size", 0) else []) \
        + ([(getattr(args, "rsrefseg_model", None) or RSREFSEG_RANDOM, rsrefseg_size, rsrefseg_size, 0)]
           if rsrefseg_size else []) \
        + ([(ZS_REF_RANDOM, args.zs_ref_size, args.zs_ref_size, 0)] if getattr(args, "zs_ref_size", 0) else [])
    rows, references = [], {}
    try:
        for name, size, tile, overlap in plan:
            model, _, kind = name.partition(" ")
            print(f"bench: {name} on {size}x{size}...", file=sys.stderr, flush=True)
            raster = write_synthetic(work / f"synthetic_{kind or 'smooth'}_{size}.tif", size, speckle=kind == "speckle")
            device = getattr(args, "device", "cpu")
            if name == "test":  # the yardstick rows: the job and GDAL's tools in turn, the median of each
                runs, walls = [], []
                for _ in range(max(1, getattr(args, "repeat", 1))):
                    runs.append(_run_one(raster, work / "out", model, tile, overlap, device, "smooth"))
                    if getattr(args, "gdal_reference", True):
                        print(f"bench: GDAL reference on {size}x{size}...", file=sys.stderr, flush=True)
                        walls.append(gdal_reference(raster, work))
                run = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
                if walls:
                    references[size] = None if None in walls else statistics.median(walls)
            else:
                run = _run_one(raster, work / "out", model, tile, overlap, device, kind or "smooth")
            rows.append(_row(name, size, run))
            if "second" in run:  # the same extent again with another prompt: cached image features
                second = "2nd sentence" if run.get("sentence") else "2nd prompt"
                rows.append(_row(f"{model}, {second}", size, run["second"]))
        batch = _batch_rows(args, work)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    checks = yardsticks(rows, references)
    if args.json:
        print(json.dumps(rows + [{"yardstick": True, **c} for c in checks] + [{"batch": True, **b} for b in batch],
                         indent=2))
        return 0
    if rows:
        print(format_table(rows, args.markdown))
    if checks:
        print()
        print(format_table(checks, args.markdown, YARDSTICK_COLUMNS))
        if references and not any(references.values()):
            print("GDAL reference skipped: gdal_calc.py and gdal_polygonize.py not found "
                  "(Debian: apt install gdal-bin)")
    if batch:
        print("\n" if rows else "", end="")
        print(format_table(batch, args.markdown, BATCH_COLUMNS))
    return 0


def _batch_rows(args, work: Path) -> list[dict]:
    count = getattr(args, "batch_rasters", 0)
    if not count:
        return []
    from .batch_rows import batch_rows

    size = args.batch_raster_size
    split = getattr(args, "batch_split_size", 0)
    print(f"bench: rsseg batch, {count} rasters of {size}x{size} on 1 and 2 workers"
          + (f", then one of {split}x{split} whole and split across 2" if split else "") + "...", file=sys.stderr,
          flush=True)
    return batch_rows(work, count, size, getattr(args, "device", "cpu"), args.tile, args.overlap, split)
