"""The real QGIS desktop under Xvfb: the plugin installed into a fresh profile, enabled there,
driven from its dock through the real worker; the layer tree and a screenshot are checked.

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


def test_the_desktop_runs_a_job_from_the_dock(tmp_path):
    shot_copy = os.environ.get("RSSEG_DESKTOP_SHOT_COPY")  # keep the screenshot for a look, if asked
    install_plugin(tmp_path)
    report, shot = tmp_path / "report.json", tmp_path / "screen.png"
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "RSSEG_PYTHON": sys.executable, "RSSEG_DESKTOP_REPORT": str(report),
           "RSSEG_DESKTOP_SHOT": str(shot), "RSSEG_DESKTOP_RASTER": str(DATA / "neon_osbs_rgb.tif"),
           "XDG_RUNTIME_DIR": str(runtime), "QT_QPA_PLATFORM": "xcb"}
    env.pop("PYTHONPATH", None)  # the desktop embeds Debian's Python; the plugin needs nothing else
    cmd = ["timeout", "240", "xvfb-run", "-a", "-s", "-screen 0 1280x900x24", "qgis", "--profiles-path",
           str(tmp_path), "--nologo", "--noversioncheck",
           "--code", str(Path(__file__).with_name("qgis_script.py"))]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=270, check=False)  # nosec B603
    assert report.exists(), f"QGIS wrote no report (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    data = json.loads(report.read_text())
    assert data["ok"], data.get("error")
    assert "Segment with text…" in data["actions"] and data["dock_layer"] == "neon"
    layers = data["groups"]["tree, soil"]
    assert sorted(name for name, _, _ in layers) == ["tree, soil (mask)", "tree, soil (polygons)"]
    assert all(crs == data["source_crs"] == "EPSG:32617" for _, crs, _ in layers)
    mask = next(extent for name, _, extent in layers if name.endswith("(mask)"))
    assert mask == data["source_extent"]
    if shot_copy:
        shutil.copy(shot, shot_copy)
    check_screenshot(shot, data["colours"])
    assert proc.returncode == 0, f"QGIS did not exit cleanly ({proc.returncode}): a modal dialog or a crash"


def check_screenshot(path: Path, colours: list[str]) -> None:
    """The window was drawn and the mask's palette colours are on the map."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    assert image.size[0] >= 800 and image.size[1] >= 600
    counts = {f"#{r:02x}{g:02x}{b:02x}": n for n, (r, g, b) in image.getcolors(image.size[0] * image.size[1])}
    assert len(counts) > 50  # a rendered window, not a blank frame
    on_map = sum(counts.get(c, 0) for c in colours)
    assert colours and on_map > 2000, (colours, on_map)
