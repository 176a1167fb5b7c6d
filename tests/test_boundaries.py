"""Architecture and safety rules checked on the source tree itself."""

from __future__ import annotations

import ast
import subprocess  # nosec B404
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
BACKEND = ROOT / "backend" / "src" / "rsseg"
PLUGIN = ROOT / "rs_refseg_plugin"


def imported_roots(folder: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def test_plugin_never_imports_torch_side_packages():
    roots = imported_roots(PLUGIN)
    assert not {"torch", "torchvision", "open_clip", "segment_anything", "peft", "timm", "rsseg"} & set(roots), roots


def test_protocol_package_is_standard_library_only():
    """The plugin imports rsseg.protocol through a link: it must not pull in torch, numpy or rasterio."""
    roots = imported_roots(BACKEND / "protocol")
    assert set(roots) <= set(sys.stdlib_module_names) | {"__future__"}, roots
    for path in (BACKEND / "protocol").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 1:
                raise AssertionError(f"{path} imports from outside the protocol package")


def test_plugin_links_the_protocol_package():
    link = PLUGIN / "protocol"
    assert link.is_symlink() and link.resolve() == (BACKEND / "protocol").resolve()


def test_backend_never_imports_qgis():
    roots = imported_roots(BACKEND)
    assert "qgis" not in roots and "PyQt5" not in roots, roots


def test_sources_are_clean_under_bandit():
    proc = subprocess.run([sys.executable, "-m", "bandit", "-q", "-r", str(BACKEND), str(PLUGIN), str(ROOT / "tools")],  # nosec B603
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_torch_load_is_weights_only():
    """Checkpoints and cached features are never unpickled as arbitrary objects."""
    calls = []
    for path in BACKEND.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", safe))
    assert calls and all(safe for _, safe in calls), calls

