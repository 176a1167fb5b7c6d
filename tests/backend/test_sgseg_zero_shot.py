"""The zero-shot protocol through the verbs a researcher runs: `rsseg train semantic` on a DLRSD-layout dataset
(17 class names), then `rsseg eval` of the bundle on an iSAID-layout dataset with iSAID's own 16 class names,
which the model never trained on. Tiny files and a tiny random CLIP: this checks the path (layouts, class-name
files, a bundle taking other names), not accuracy (docs/sgseg.md has the numbers that need real weights)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from rsseg.bundles import read_bundle
from rsseg.cli.main import main as cli
from rsseg.datasets.class_files import builtin_classnames
from rsseg.eval import load_classnames

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")]
SIZE = 96


def _write(path: Path, data: np.ndarray) -> None:
    data = data if data.ndim == 3 else data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="PNG" if path.suffix == ".png" else "GTiff", width=data.shape[2],
                           height=data.shape[1], count=data.shape[0], dtype="uint8") as dst:
            dst.write(data.astype(np.uint8))


def _scenes(root: Path, image: str, label: str, values: tuple[int, int], count: int, seed: int) -> None:
    """Squares of label value values[1] (red) on a field of values[0] (green)."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        lab = np.full((SIZE, SIZE), values[0], np.uint8)
        for _ in range(3):
            y, x = rng.integers(0, SIZE - 30, 2)
            lab[y:y + 24, x:x + 24] = values[1]
        rgb = np.where(lab[None] == values[1], np.array([200, 40, 30])[:, None, None],
                       np.array([50, 140, 60])[:, None, None])
        _write(root / image.format(i=i), rgb + rng.integers(0, 10, rgb.shape))
        _write(root / label.format(i=i), lab)


def test_train_on_dlrsd_then_evaluate_on_isaid_with_its_own_class_names(tmp_path, capsys):
    dlrsd, isaid = tmp_path / "dlrsd", tmp_path / "isaid"
    _scenes(dlrsd, "images/train/buildings{i:02d}.tif", "annotations/train/buildings{i:02d}.png", (8, 2), 4, 0)
    _scenes(dlrsd, "images/val/buildings{i:02d}.tif", "annotations/val/buildings{i:02d}.png", (8, 2), 2, 1)
    _scenes(isaid, "img_dir/val/P{i:04d}_0_896_0_896.png", "ann_dir/val/P{i:04d}_0_896_0_896_instance_color_RGB.png",
            (0, 1), 2, 2)
    out = tmp_path / "sgseg-dlrsd"
    assert cli(["train", "semantic", "--dataset", "dlrsd", str(dlrsd), "--model", "sgseg-vit-b-16-tiny", "--out",
                str(out), "--epochs", "1", "--crop", "64", "--batch-size", "4", "--device", "cpu", "--quiet"]) == 0
    capsys.readouterr()  # the training summary
    info = read_bundle(out)
    assert info.builder == "sgseg" and len(info.classes) == 17 and info.classes[2] == "buildings"
    code = cli(["eval", "--dataset", "isaid", str(isaid), "--model", str(out), "--device", "cpu", "--json",
                "--quiet"])
    report = json.loads(capsys.readouterr().out)
    names = [line.split(",")[0].strip() for line in load_classnames(builtin_classnames("isaid.txt"))]
    assert code == 0 and report["images"] == 2
    assert [c["name"] for c in report["metrics"]["classes"]] == names
