"""`make package` / `make deploy`: the zip's layout, metadata validation, and the deployed plugin in QGIS."""

from __future__ import annotations

import os
import shutil
import subprocess  # nosec B404
import sys
import zipfile
from pathlib import Path

import pytest
from qgis.PyQt.QtCore import QSettings

from tools import package_plugin as pp

ROOT = Path(__file__).parents[2]
NAME = "rs_refseg_plugin"


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    return pp.build(ROOT, tmp_path_factory.mktemp("dist"))


def test_zip_layout(package):
    assert package.name == f"{NAME}-{pp.read_metadata(ROOT / NAME)['version']}.zip"
    assert package.stat().st_size < 25 * 1024 * 1024
    with zipfile.ZipFile(package) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        assert {n.split("/")[0] for n in infos} == {NAME}
        assert not [n for n, i in infos.items() if (i.external_attr >> 16) & 0o170000 == 0o120000]
        assert not [n for n in infos if n.endswith(pp.BINARY_SUFFIXES) or "__pycache__" in n or ".egg-info" in n]
        assert not [n for n in infos if n.endswith(".tif")]
        for name in ("metadata.txt", "LICENSE", "icon.svg", "__init__.py", "plugin.py", "core/setup_backend.py"):
            assert f"{NAME}/{name}" in infos, name
        # The protocol link became real files with the linked content.
        for source in (ROOT / "backend/src/rsseg/protocol").glob("*.py"):
            assert zf.read(f"{NAME}/protocol/{source.name}") == source.read_bytes()
        # The backend's source, installable by "Set up backend".
        for name in ("pyproject.toml", "README.md", "src/rsseg/__init__.py", "src/rsseg/cli/main.py",
                     "src/rsseg/datasets/classnames/loveda.txt"):
            assert f"{NAME}/backend/{name}" in infos, name
        packaged = {n for n in infos if n.startswith(f"{NAME}/backend/src/rsseg/")}
        expected = {f"{NAME}/backend/src/rsseg/{p.relative_to(ROOT / 'backend/src/rsseg').as_posix()}"
                    for p in (ROOT / "backend/src/rsseg").rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")}
        assert packaged == expected
    assert pp.check_zip(package)[1] == len(infos)


def _plugin_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "root" / NAME
    copy.mkdir(parents=True)
    for name in ("metadata.txt", "icon.svg", "LICENSE"):
        shutil.copy(ROOT / NAME / name, copy / name)
    return copy


def _set(meta: Path, field: str, value: str | None) -> None:
    lines = [ln for ln in meta.read_text().splitlines() if not ln.startswith(field + "=")]
    meta.write_text("\n".join(lines + ([f"{field}={value}"] if value is not None else [])) + "\n")


@pytest.mark.parametrize("field", pp.REQUIRED + pp.RECOMMENDED)
def test_validation_names_a_missing_field(tmp_path, field):
    plugin = _plugin_copy(tmp_path)
    assert pp.validate_metadata(plugin)["name"] == "RS RefSeg"
    _set(plugin / "metadata.txt", field, None)
    with pytest.raises(pp.PackageError, match=f"field '{field}' is missing"):
        pp.validate_metadata(plugin)


@pytest.mark.parametrize("field, value, why", [
    ("icon", "missing.png", "not a file"), ("qgisMaximumVersion", "3.99", "must be 4.99"),
    ("email", "nobody", "not an e-mail"), ("supportsQt6", "False", "must be True"),
    ("repository", "github.com/x", "http"), ("version", "one", "must look like"),
])
def test_validation_rejects_bad_values(tmp_path, field, value, why):
    plugin = _plugin_copy(tmp_path)
    _set(plugin / "metadata.txt", field, value)
    with pytest.raises(pp.PackageError, match=f"field '{field}' .*{why}"):
        pp.validate_metadata(plugin)


def test_package_command_fails_on_tampered_metadata_without_a_zip(tmp_path):
    plugin = _plugin_copy(tmp_path)
    _set(plugin / "metadata.txt", "email", None)
    tool = str(ROOT / "tools/package_plugin.py")
    proc = subprocess.run([sys.executable, tool, "validate", str(plugin)],  # nosec B603
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "field 'email' is missing" in proc.stderr, proc.stderr
    with pytest.raises(pp.PackageError, match="email"):
        pp.build(plugin.parent, tmp_path / "dist")
    assert not (tmp_path / "dist").exists()


INI = """[General]
lastVersion=32216
[PythonPlugins]
processing=true
MyCamelPlugin=false

[UI]
state=@ByteArray(\\0\\0\\0\\xff\\0\\0%\\x1)
geometry\\Main%20Window=@Variant(\\0\\0\\0\\x7f\\0\\0\\0\\fQgsGeometry)
Some%3AKey=50%
"""


def test_deploy_installs_and_enables_keeping_the_ini(package, tmp_path):
    profile = tmp_path / "profile"
    ini = profile / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text(INI)
    # An older install as a developer's link to a checkout: the link goes, its target stays.
    checkout = tmp_path / "checkout"
    (checkout / "keep.txt").parent.mkdir()
    (checkout / "keep.txt").write_text("mine")
    (profile / "python" / "plugins").mkdir(parents=True)
    (profile / "python" / "plugins" / NAME).symlink_to(checkout)

    target = pp.deploy(package, profile)
    assert target == profile / "python" / "plugins" / NAME and not target.is_symlink()
    assert (checkout / "keep.txt").read_text() == "mine"
    assert (target / "protocol").is_dir() and not (target / "protocol").is_symlink()
    assert (target / "protocol" / "client.py").is_file() and (target / "backend" / "pyproject.toml").is_file()
    assert [p.name for p in target.parent.iterdir()] == [NAME]  # no staging folder left behind

    text = ini.read_text()
    assert text == INI.replace("MyCamelPlugin=false\n", f"MyCamelPlugin=false\n{NAME}=true\n")
    settings = QSettings(str(ini), QSettings.IniFormat)
    assert settings.value(f"PythonPlugins/{NAME}") == "true"
    assert settings.value("PythonPlugins/MyCamelPlugin") == "false" and settings.value("UI/Some:Key") == "50%"

    pp.deploy(package, profile)  # again: replaced in place, the flag not duplicated
    assert ini.read_text() == text


def test_enable_in_a_new_or_sectionless_ini(tmp_path):
    ini = tmp_path / "QGIS3.ini"
    pp.enable_in_ini(ini)
    assert ini.read_text() == f"[PythonPlugins]\n{NAME}=true\n"
    ini.write_text("[General]\r\nx=1\r\n[PythonPlugins]\r\nrs_refseg_plugin=false\r\n")
    pp.enable_in_ini(ini)
    assert ini.read_bytes() == b"[General]\r\nx=1\r\n[PythonPlugins]\r\nrs_refseg_plugin=true\r\n"


LOAD = """
import sys, unittest.mock, qgis.utils
sys.modules.setdefault("mock", unittest.mock)  # qgis.testing.mocked imports the old `mock` package
from qgis.testing import start_app
from qgis.testing.mocked import get_iface
app = start_app()
qgis.utils.iface = get_iface()
plugins = sys.argv[1]
qgis.utils.plugin_paths = [plugins]
sys.path.insert(0, plugins)
qgis.utils.updateAvailablePlugins()
assert "rs_refseg_plugin" in qgis.utils.available_plugins, qgis.utils.available_plugins
assert qgis.utils.loadPlugin("rs_refseg_plugin") and qgis.utils.startPlugin("rs_refseg_plugin")
import rs_refseg_plugin, rs_refseg_plugin.protocol.client, rs_refseg_plugin.core.setup_backend as sb
assert callable(rs_refseg_plugin.classFactory)
assert rs_refseg_plugin.__file__.startswith(plugins), rs_refseg_plugin.__file__
assert sb.bundled_backend() == sb.PLUGIN_DIR / "backend", sb.bundled_backend()
assert not {"torch", "numpy", "rsseg"} & set(sys.modules)
qgis.utils.unloadPlugin("rs_refseg_plugin")
print("loaded", type(qgis.utils.plugins.get("rs_refseg_plugin")).__name__, rs_refseg_plugin.__file__)
"""


def test_deployed_plugin_loads_in_headless_qgis(package, tmp_path):
    profile = tmp_path / "profile"
    pp.deploy(package, profile)
    plugins = profile / "python" / "plugins"
    env = dict(os.environ, PYTHONPATH=str(plugins), QT_QPA_PLATFORM="offscreen", HOME=str(tmp_path),
               XDG_RUNTIME_DIR=str(tmp_path))
    os.chmod(tmp_path, 0o700)
    proc = subprocess.run([sys.executable, "-c", LOAD, str(plugins)], cwd=tmp_path, env=env,  # nosec B603
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "loaded" in proc.stdout
