"""The real QGIS desktop under Xvfb: the plugin installed into a fresh profile, enabled there, and a new
user's first run driven through its widgets and the real worker; the layer tree, the run folders and
screenshots are checked.

`make test` installs qgis, xvfb, xauth and xdotool from Debian (Makefile, docs/install.md), so this runs in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess  # nosec B404  # starts QGIS with an argument list, no shell
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
DATA = ROOT / "tests" / "data"
PLUGIN = ROOT / "rs_refseg_plugin"

pytestmark = pytest.mark.skipif(not (shutil.which("qgis") and shutil.which("xvfb-run")),
                                reason="the QGIS desktop and xvfb-run are installed by `make test`")


def install_plugin(root: Path) -> Path:
    """`make package` + `make deploy` into a fresh profile: the zip a user installs, enabled there."""
    from tools import package_plugin

    zip_path = package_plugin.build(ROOT, root / "dist", bandit=False)
    profile = root / "profiles" / "default"  # QGIS looks for profiles in <--profiles-path>/profiles
    package_plugin.deploy(zip_path, profile)
    assert (profile / "python" / "plugins" / PLUGIN.name / "protocol" / "client.py").is_file()
    return profile


def test_a_new_user_gets_a_first_result_from_the_dock(tmp_path):
    """Fresh profile → backend chosen from the first-run panel → class-list run → summary → a second run
    into a new sub-folder with the first run's layers intact; screenshots checked (and kept in
    $RSSEG_DESKTOP_SHOT_COPY, a folder, when set: docs/images comes from there)."""
    shot_copy = os.environ.get("RSSEG_DESKTOP_SHOT_COPY")
    profile = install_plugin(tmp_path)
    report, shots = tmp_path / "report.json", tmp_path / "shots"
    shots.mkdir()
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "RSSEG_DESKTOP_BACKEND": sys.executable, "RSSEG_DESKTOP_REPORT": str(report),
           "RSSEG_DESKTOP_SHOTS": str(shots), "RSSEG_DESKTOP_RASTER": str(DATA / "neon_osbs_rgb.tif"),
           "XDG_RUNTIME_DIR": str(runtime), "QT_QPA_PLATFORM": "xcb"}
    for name in ("PYTHONPATH", "RSSEG_PYTHON", "QT_QPA_PLATFORMTHEME"):  # a fresh user: no backend configured
        env.pop(name, None)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not (Path(p) / "rsseg").exists())  # nor an rsseg on PATH to find
    cmd = ["timeout", "420", "xvfb-run", "-a", "-s", "-screen 0 1280x900x24", "qgis", "--profiles-path",
           str(tmp_path), "--nologo", "--noversioncheck",
           "--code", str(Path(__file__).with_name("qgis_script.py"))]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=450, check=False)  # nosec B603
    assert report.exists(), f"QGIS wrote no report (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    data = json.loads(report.read_text())
    assert data["ok"], (data.get("error"), data.get("steps"), proc.stderr[-2000:])
    assert data["toolbar"] == {"visible": True, "has_button": True}
    assert data["first_run"]["buttons"] == ["setup", "python"] and "not set up yet" in data["first_run"]["text"]
    assert data["file_dialog"] == ["QFileDialog", True, [sys.executable]]
    assert data["python"] == sys.executable and data["models"] > 5
    assert data["after_setup_buttons"] == []  # nothing missing any more: the panel is gone
    assert data["summary_visible"] and "tree: " in data["summary"] and "Outputs: " in data["summary"]
    first, second = (Path(p) for p in data["runs"])
    assert first != second and first.parent == second.parent == profile / "rs_refseg" / "outputs"
    assert data["first_still_loaded"] and (first / "mask.tif").exists() and (second / "mask.tif").exists()
    assert "Segment with text…" in data["actions"] and data["dock_layer"] == "neon"
    names = [name for name, _ in data["groups"]]
    runs = [layers for name, layers in data["groups"] if name.startswith("tree, soil — clip-vit-b-16-tiny ")]
    assert len(runs) == 2 and len(set(names)) == len(names), names  # two runs, told apart by their names
    for layers in runs:
        assert sorted(name for name, _, _ in layers) == ["tree, soil (mask)", "tree, soil (polygons)"]
        assert all(crs == data["source_crs"] == "EPSG:32617" for _, crs, _ in layers)
        assert next(extent for name, _, extent in layers if name.endswith("(mask)")) == data["source_extent"]
    if shot_copy:
        for shot in shots.iterdir():
            shutil.copy(shot, Path(shot_copy) / shot.name)
    check_screenshot(shots / "window.png", data["colours"])
    for name in ("dock-first-run.png", "dock-summary.png", "processing-dialog.png"):
        check_drawn(shots / name)
    assert proc.returncode == 0, f"QGIS did not exit cleanly ({proc.returncode}): a modal dialog or a crash"


def test_train_on_layers_then_segment_with_the_new_model(tmp_path):
    """Fresh profile with a backend → the dock's Train tab: the footprints' field, the class table, the tiny
    family for one epoch → summary, IoU table, the model in "My models" and selected in the Segment tab with
    its classes → Run segments the raster with it (qgis_train_script.py)."""
    install_plugin(tmp_path)
    report, shots, models = tmp_path / "report.json", tmp_path / "shots", tmp_path / "my models"
    raster = tmp_path / "atlanta.tif"  # a copy: the map's statistics go to a side-car .aux.xml beside it
    shutil.copy(DATA / "spacenet_atlanta_pan.tif", raster)
    shots.mkdir()
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "RSSEG_PYTHON": sys.executable, "RSSEG_DESKTOP_REPORT": str(report),
           "RSSEG_DESKTOP_SHOTS": str(shots), "RSSEG_DESKTOP_RASTER": str(raster),
           "RSSEG_DESKTOP_LABELS": str(DATA / "spacenet_atlanta_buildings.geojson"),
           "RSSEG_DESKTOP_MODELS": str(models), "RSSEG_MODELS_DIR": str(tmp_path / "rsseg-models"),
           "HF_HUB_OFFLINE": "1", "XDG_RUNTIME_DIR": str(runtime), "QT_QPA_PLATFORM": "xcb"}
    for name in ("PYTHONPATH", "QT_QPA_PLATFORMTHEME"):
        env.pop(name, None)
    cmd = ["timeout", "540", "xvfb-run", "-a", "-s", "-screen 0 1280x900x24", "qgis", "--profiles-path",
           str(tmp_path), "--nologo", "--noversioncheck",
           "--code", str(Path(__file__).with_name("qgis_train_script.py"))]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=570, check=False)  # nosec B603
    assert report.exists(), f"QGIS wrote no report (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    data = json.loads(report.read_text())
    assert data["ok"], (data.get("error"), data.get("steps"), proc.stderr[-2000:])
    assert data["listed"] and data["table"] == ["yes"]
    bundle = models / "desktop buildings"
    assert data["trained"] == {"model": str(bundle.resolve()), "classes": ["background", "building"], "epochs": 1}
    assert (bundle / "model.json").is_file() and not list(models.glob(".rsseg-train-*"))
    assert any(s.startswith("epoch 1/1") for s in data["statuses"]), data["statuses"]
    assert "validation mIoU" in data["train_summary"] and data["iou_rows"] == 2
    assert "epoch 1/1: loss" in data["train_log"]
    assert data["selected"] == [str(bundle.resolve()), "background, building"]
    assert data["picker"][:2] == ["— My models —", "desktop buildings — background, building"]
    segmented = data["segmented"]
    assert segmented is not None, data["segment_log"]
    assert segmented["group"].startswith("background, building — desktop buildings ")
    assert segmented["classes"] == ["background", "building"]
    assert segmented["extent"] == segmented["source_extent"]
    check_drawn(shots / "dock-train.png")
    if os.environ.get("RSSEG_DESKTOP_SHOT_COPY"):  # docs/images/dock-train.png comes from here
        shutil.copy(shots / "dock-train.png", Path(os.environ["RSSEG_DESKTOP_SHOT_COPY"]) / "dock-train.png")
    assert proc.returncode == 0, f"QGIS did not exit cleanly ({proc.returncode}): a modal dialog or a crash"


def _colours(path: Path) -> dict[str, int]:
    from PIL import Image

    image = Image.open(path).convert("RGB")
    return {f"#{r:02x}{g:02x}{b:02x}": n for n, (r, g, b) in image.getcolors(image.size[0] * image.size[1])}


def check_drawn(path: Path) -> None:
    """A widget screenshot that holds a drawn widget (text, frames), not a blank or black rectangle."""
    from PIL import Image

    width, height = Image.open(path).size
    assert width >= 250 and height >= 250, (path.name, width, height)
    assert len(_colours(path)) > 20, path.name


def check_screenshot(path: Path, colours: list[str]) -> None:
    """The window was drawn and the mask's palette colours are on the map."""
    from PIL import Image

    image = Image.open(path)
    assert image.size[0] >= 800 and image.size[1] >= 600
    counts = _colours(path)
    assert len(counts) > 50  # a rendered window, not a blank frame
    on_map = sum(counts.get(c, 0) for c in colours)
    assert colours and on_map > 2000, (colours, on_map)
