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



# --- the backend's layers: imports only go down --------------------------------------------------------------

SRC = BACKEND.parent
# Floors, lowest first: a module imports only from its own floor or below. A key is a module or a package
# (the longest matching key wins); importing a.b.c also runs the __init__ of a.b, which counts as an import.
FLOORS = {
    "protocol": 0,  # standard-library contracts, shared with the plugin
    "": 1, "errors": 1, "progress": 1, "devices": 1, "jsonfile": 1, "signals": 1, "compat": 1, "spec": 1,
    "grid": 1,
    "weights": 2, "bundles": 2,  # trained-model bundles: manifest + safetensors
    "metrics": 2,  # confusion matrices and scores, numpy only: training and eval score with them
    "execution": 3,  # the tile runner and the feature cache
    "models": 4,  # the model families and their registry
    "raster": 5,  # the engine
    "datasets": 6,  # readers, layouts, chips, synthetic sets: rasterio at most; below training and eval
    "training": 7,  # the service runs training jobs (train from layers)
    "service": 8, "diagnostics": 8,  # the worker answers `doctor` requests with the report
    "eval": 9, "bench": 9,
    "cli": 10, "__main__": 10,
}


def _floor(module: str) -> tuple[str, int]:
    name = module.removeprefix("rsseg").removeprefix(".")
    keys = [k for k in FLOORS if k and (name == k or name.startswith(k + "."))]
    key = max(keys, key=len) if keys else ""
    return key, FLOORS[key]


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def backend_imports() -> list[tuple[str, str, int]]:
    """(importer, imported, line) for every import of an rsseg module, function-level ones included, plus
    the package __init__ files each import runs."""
    found = []
    for path in BACKEND.rglob("*.py"):
        module, package = _module(path), path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
                targets = [prefix] if node.module else [f"{prefix}.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "rsseg":
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == "rsseg"]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                for i in range(2, len(parts) + 1):
                    imported = ".".join(parts[:i])
                    if not (module + ".").startswith(imported + "."):  # its own packages are already running
                        found.append((module, imported, node.lineno))
    return found


def test_backend_imports_only_go_down_the_layers():
    upward = sorted({f"{a} -> {b} (line {n})" for a, b, n in backend_imports() if _floor(b)[1] > _floor(a)[1]})
    assert upward == [], "\n".join(upward)


def test_no_import_cycles_between_backend_packages():
    """Packages on one floor (training, eval, bench...) may use each other, but never both ways."""
    edges = {(_floor(a)[0], _floor(b)[0]) for a, b, _ in backend_imports()}
    cycles = sorted(f"{a} <-> {b}" for a, b in edges if a < b and (b, a) in edges)
    assert cycles == [], cycles
