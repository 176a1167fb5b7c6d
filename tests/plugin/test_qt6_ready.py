"""The plugin runs on QGIS 4 (Qt6) as well as on QGIS 3.22 (Qt5): its source avoids what QGIS's
PyQt5 -> PyQt6 migration rewrites.

Qt6 drops unscoped enum access (`Qgis.Warning` is `Qgis.MessageLevel.Warning`, `QgsTask.CanCancel`
is `QgsTask.Flag.CanCancel`), `exec_()`, `QVariant`, `QRegExp` and PyQt5 imports, and moves
`QAction` to QtGui. The scan is exact for enums: each `Class.member` in the source whose member is
an enum value nested in that class (found by asking the running PyQt/QGIS) must be written scoped.
"""

from __future__ import annotations

import ast
import enum
import importlib
from pathlib import Path

PLUGIN = Path(__file__).parents[2] / "rs_refseg_plugin"
SOURCES = sorted(p for p in PLUGIN.rglob("*.py") if "protocol" not in p.relative_to(PLUGIN).parts)
QT_MODULES = ("qgis.core", "qgis.gui", "qgis.PyQt.QtCore", "qgis.PyQt.QtGui", "qgis.PyQt.QtWidgets")
REMOVED = {"exec_": "exec()", "QVariant": "QMetaType or Python values", "QRegExp": "QRegularExpression",
           "QDesktopWidget": "QScreen", "Flags": "the Flag enum, e.g. QgsTask.Flag(0) for none"}


def _imported_classes(tree: ast.Module) -> dict[str, object]:
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in QT_MODULES:
            module = importlib.import_module(node.module)
            for alias in node.names:
                value = getattr(module, alias.name, None)
                if isinstance(value, type):
                    found[alias.asname or alias.name] = value
    return found


def _enum_type(owner: type, member: str):
    """The enum type nested in `owner` that `owner.member` is a value of, or None."""
    value = getattr(owner, member, None)
    kind = type(value)
    if value is None or isinstance(value, type) or kind.__name__ == member:
        return None
    scoped = type(kind).__name__ == "enumtype" or isinstance(value, enum.Enum)  # sip's enums, or Python's
    return kind if scoped and getattr(owner, kind.__name__, None) is kind else None


def unscoped_enums(path: Path, root: Path = PLUGIN) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    classes = _imported_classes(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in classes:
            kind = _enum_type(classes[node.value.id], node.attr)
            if kind is not None:
                found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value.id}.{node.attr} -> "
                             f"{node.value.id}.{kind.__name__}.{node.attr}")
    return found


def test_the_scan_finds_unscoped_enums(tmp_path):
    """The scan itself can fail: unscoped forms are found, scoped ones pass."""
    sample = tmp_path / "sample.py"
    sample.write_text("from qgis.core import Qgis, QgsTask\nfrom qgis.PyQt.QtCore import Qt\n"
                      "a = (Qgis.Warning, QgsTask.CanCancel, Qt.AlignLeft)\n"
                      "b = (Qgis.MessageLevel.Warning, QgsTask.Flag.CanCancel, Qt.AlignmentFlag.AlignLeft)\n")
    found = sorted(line.split(": ", 1)[1] for line in unscoped_enums(sample, tmp_path))
    assert found == ["Qgis.Warning -> Qgis.MessageLevel.Warning", "QgsTask.CanCancel -> QgsTask.Flag.CanCancel",
                     "Qt.AlignLeft -> Qt.AlignmentFlag.AlignLeft"]  # sorted: Q, Q, Qt


def test_enums_are_scoped():
    found = [line for path in SOURCES for line in unscoped_enums(path)]
    assert found == [], "\n".join(found)


def test_no_api_that_qt6_removed():
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
            if name in REMOVED:
                found.append(f"{path.relative_to(PLUGIN)}:{node.lineno}: {name} (use {REMOVED[name]})")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(m.split(".")[0] in ("PyQt5", "PyQt6", "sip") for m in modules):
                    found.append(f"{path.relative_to(PLUGIN)}:{node.lineno}: import through qgis.PyQt instead")
    assert found == [], "\n".join(found)


def test_qaction_comes_from_where_each_qt_has_it():
    """Qt6 moved QAction to QtGui: it is imported from QtGui first, QtWidgets only as the Qt5 fallback."""
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "qgis.PyQt.QtWidgets" \
                    and any(a.name == "QAction" for a in node.names):
                handlers = [t for t in ast.walk(tree) if isinstance(t, ast.Try)
                            and any(h is node for handler in t.handlers for h in handler.body)]
                assert handlers, f"{path.relative_to(PLUGIN)}:{node.lineno}: QAction from QtWidgets without the " \
                                 "QtGui import first"


def test_metadata_declares_qt6_support():
    for metadata in (PLUGIN / "metadata.txt", PLUGIN.parent / "metadata.txt"):
        assert "supportsQt6=True" in metadata.read_text(encoding="utf-8").splitlines(), metadata
