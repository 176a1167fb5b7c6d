"""`make deploy`'s backend step (tools/deploy_backend.py): the profile's QgsSettings `rs_refseg/python`
points at the repository's venv Python when it has rsseg, an interpreter the user chose is kept, and
the rest of QGIS3.ini stays byte for byte. The ini is read back with Qt's own QSettings."""

from __future__ import annotations

import shutil
import subprocess  # nosec B404
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from qgis.PyQt.QtCore import QSettings

from tools import deploy_backend as db

ROOT = Path(__file__).parents[2]
PYTHON = Path(sys.executable)  # the test venv's interpreter, which has rsseg (not resolved: a venv link)
KEY = "rs_refseg/python"
INI = """[PythonPlugins]
processing=true
rs_refseg_plugin=true

[rs_refseg]
recent_classes=building, road, tree
model_classes=clip-vit-b-16
out_dir="/data/a, b"

[UI]
state=@ByteArray(\\0\\0\\0\\xff\\0\\0%\\x1)
Some%3AKey=50%
"""


def qt_value(ini: Path, key: str = KEY):
    return QSettings(str(ini), QSettings.Format.IniFormat).value(key)


def test_a_fresh_profile_gets_the_repository_python(tmp_path):
    what, message = db.point_profile_at(PYTHON, tmp_path / "profile")
    ini = tmp_path / "profile" / "QGIS" / "QGIS3.ini"
    assert what == "set" and str(PYTHON) in message and str(ini) in message
    assert ini.read_text() == f"[rs_refseg]\npython={PYTHON}\n"
    assert qt_value(ini) == str(PYTHON)
    assert db.point_profile_at(PYTHON, tmp_path / "profile")[0] == "same"  # again: nothing to do
    assert ini.read_text() == f"[rs_refseg]\npython={PYTHON}\n"


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_other_keys_and_sections_are_kept_byte_for_byte(tmp_path, newline):
    ini = tmp_path / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir()
    ini.write_bytes(INI.replace("\n", newline).encode())
    assert db.point_profile_at(PYTHON, tmp_path)[0] == "set"
    expected = INI.replace('out_dir="/data/a, b"\n', f'out_dir="/data/a, b"\npython={PYTHON}\n')
    assert ini.read_bytes() == expected.replace("\n", newline).encode()
    settings = QSettings(str(ini), QSettings.Format.IniFormat)
    assert settings.value(KEY) == str(PYTHON) and settings.value("rs_refseg/out_dir") == "/data/a, b"
    assert settings.value("rs_refseg/recent_classes") == ["building", "road", "tree"]
    assert settings.value("PythonPlugins/rs_refseg_plugin") == "true" and settings.value("UI/Some:Key") == "50%"


def test_an_interpreter_the_user_chose_is_kept(tmp_path):
    ini = tmp_path / "QGIS" / "QGIS3.ini"
    chosen = "/home/me/my envs/é1/bin/python"  # written by QGIS's own QSettings, with its escapes
    settings = QSettings(str(ini), QSettings.Format.IniFormat)
    settings.setValue(KEY, chosen)
    settings.setValue("rs_refseg/device", "cuda")
    settings.sync()
    before = ini.read_bytes()
    what, message = db.point_profile_at(PYTHON, tmp_path)
    assert what == "kept" and chosen in message and str(PYTHON) in message and "does not exist" in message
    assert ini.read_bytes() == before and qt_value(ini) == chosen


def test_an_empty_setting_is_replaced_in_place(tmp_path):
    ini = tmp_path / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir()
    ini.write_text("[rs_refseg]\npython=\ndevice=cpu\n")
    assert db.point_profile_at(PYTHON, tmp_path)[0] == "set"
    assert ini.read_text() == f"[rs_refseg]\npython={PYTHON}\ndevice=cpu\n"


def test_nothing_is_written_without_a_backend(tmp_path):
    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False, symlinks=True)  # a Python without rsseg
    what, message = db.point_profile_at(bare / "bin" / "python", tmp_path / "profile")
    assert what == "skipped" and "has no rsseg" in message
    what, message = db.point_profile_at(tmp_path / "no-venv" / "bin" / "python", tmp_path / "profile")
    assert what == "skipped" and "does not exist" in message and "make setup" in message
    assert not (tmp_path / "profile").exists()


def test_a_venv_in_an_odd_path_is_written_as_qt_reads_it(tmp_path):
    """A venv in a folder with a space, a comma and non-ASCII characters, seeing this venv's packages."""
    odd = tmp_path / "my envs, é1 🐍"
    venv.create(odd, with_pip=False, symlinks=True)
    purelib = Path(sysconfig.get_paths(vars={"base": str(odd), "platbase": str(odd)})["purelib"])
    purelib.mkdir(parents=True, exist_ok=True)
    (purelib / "parent.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    python = odd / "bin" / "python"
    assert db.has_rsseg(python)
    assert db.point_profile_at(python, tmp_path / "profile")[0] == "set"
    ini = tmp_path / "profile" / "QGIS" / "QGIS3.ini"
    assert qt_value(ini) == str(python) and db.read_ini_value(ini) == str(python)
    assert ini.read_text().isascii()  # escaped as Qt5's QSettings writes, which Qt6 reads too


@pytest.mark.parametrize("value", ["/a/b c/python", "C:\\Users\\é1\\python.exe", "a, b; c=d", " lead", "trail ",
                                   "@home", 'q"uote', "tab\there", "日本/🐍/py3", "é1f", "x\x01y2", ""])
def test_values_are_escaped_exactly_as_qsettings_does(tmp_path, value):
    mine, theirs = tmp_path / "mine.ini", tmp_path / "theirs.ini"
    db.write_ini_value(mine, value)
    settings = QSettings(str(theirs), QSettings.Format.IniFormat)
    settings.setValue(KEY, value)
    settings.sync()
    assert mine.read_text() == theirs.read_text()
    assert qt_value(mine) == value and db.read_ini_value(theirs) == value


def test_the_script_and_make_deploy(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "deploy_backend.py"), "--python", str(PYTHON),  # nosec
                           "--profile", str(tmp_path / "p")], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("backend: set ") and qt_value(tmp_path / "p" / "QGIS" / "QGIS3.ini") == str(PYTHON)
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dry = subprocess.run(["make", "--no-print-directory", "-n", "deploy", f"PROFILE_DIR={tmp_path / 'p'}"],  # nosec
                         cwd=ROOT,
                         capture_output=True, text=True, check=False, timeout=60)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[-1].endswith(f'tools/deploy_backend.py --python "{ROOT / ".venv" / "bin" / "python"}" '
                              f'--profile "{tmp_path / "p"}"'), lines
    assert "package_plugin.py deploy" in lines[-2]
