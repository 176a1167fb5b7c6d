"""`make deploy`'s second step: point a QGIS profile's plugin at the repository's backend.

When the repository's venv Python exists and has the rsseg backend, the profile's QgsSettings key
`rs_refseg/python` (`[rs_refseg] python=` in `PROFILE/QGIS/QGIS3.ini`) is set to it, unless the
user already chose another interpreter there (that one is kept). Standard library only.

The ini is QSettings' file, so it is edited as lines (configparser would rewrite it: lower-cased
keys, QSettings' escapes and @Variant values): only the one `python=` line is written, the rest of
the file is kept byte for byte. The value is escaped as Qt writes it (`\\`, quotes, `\\xHHHH` for
what is not ASCII), which QGIS 3 (Qt5) and QGIS 4 (Qt6) read back alike.

    python tools/deploy_backend.py [--python .venv/bin/python] [--profile DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess  # nosec B404  # runs the given interpreter with a fixed argument list, no shell
import sys
from pathlib import Path
from typing import Optional, Union

try:
    from tools import qsettings_ini
    from tools.package_plugin import default_profile
except ImportError:  # run as a script: tools/ is sys.path[0]
    import qsettings_ini  # type: ignore[no-redef]
    from package_plugin import default_profile  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
SECTION, KEY = "rs_refseg", "python"  # rs_refseg_plugin/core/settings.py: PREFIX + "python"
FOREIGN_PYTHON_ENV = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "VIRTUAL_ENV")  # as protocol/launch.py
HAS_RSSEG = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('rsseg') else 3)"


def repository_python(root: Path = ROOT) -> Path:
    """The repository's venv interpreter (`make setup` makes it), not resolved: a venv's python is
    a link to the base interpreter, and only the link's path runs the venv."""
    venv = root / ".venv"
    return venv / "Scripts" / "python.exe" if sys.platform == "win32" else venv / "bin" / "python"


def profile_ini(profile: Path) -> Path:
    return Path(profile) / "QGIS" / "QGIS3.ini"


# ------------------------------------------------------------------------------- QSettings' escapes

def read_ini_value(ini: Path, section: str = SECTION, key: str = KEY) -> Union[str, list[str], None]:
    return qsettings_ini.read_ini_value(ini, section, key)


def write_ini_value(ini: Path, value: str, section: str = SECTION, key: str = KEY) -> None:
    qsettings_ini.write_ini_value(ini, value, section, key)


# ------------------------------------------------------------------------------------------ deploy

def has_rsseg(python: Path) -> bool:
    """Whether `python` runs and finds the rsseg package (without importing it: no torch start-up)."""
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_PYTHON_ENV}
    try:
        proc = subprocess.run([str(python), "-c", HAS_RSSEG], env=env, capture_output=True, timeout=120,
                              check=False)  # nosec B603  # an argument list, no shell
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def _same(a: str, b: str) -> bool:
    return os.path.normcase(os.path.normpath(a)) == os.path.normcase(os.path.normpath(b))


def point_profile_at(python: Path, profile: Optional[Path] = None) -> tuple[str, str]:
    """Set the profile's backend Python to `python` (see the module's docstring).

    Returns (what, message): what is "set", "same", "kept" or "skipped"; the message says it in a line."""
    profile = Path(profile) if profile else default_profile()
    ini = profile_ini(profile)
    python = Path(os.path.abspath(python))  # absolute, links kept (a venv's python is a link)
    where = f"{ini} [{SECTION}] {KEY}"
    if not python.exists():
        return "skipped", (f"backend: {python} does not exist (`make setup` creates it); the plugin's backend "
                           f"Python is left as it is (set it in the dock's Advanced, or use Set up backend…)")
    if not has_rsseg(python):
        return "skipped", (f"backend: {python} has no rsseg package (`make setup` installs it); {where} "
                           "is left as it is")
    current = read_ini_value(ini)
    if isinstance(current, str) and current.strip() and _same(current.strip(), str(python)):
        return "same", f"backend: {where} already is {python}"
    if current is not None and (not isinstance(current, str) or current.strip()):
        shown = current if isinstance(current, str) else ", ".join(current)
        missing = "" if isinstance(current, str) and Path(current.strip()).exists() else " (that file does not exist)"
        return "kept", (f"backend: kept {where} = {shown}{missing}, set before; to use the repository's backend "
                        f"choose {python} in the dock's Advanced → Backend Python")
    write_ini_value(ini, str(python))
    return "set", (f"backend: set {where} = {python} (the repository's venv, with rsseg); "
                   "quit QGIS first, a running QGIS rewrites its ini when it exits")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", type=Path, default=repository_python(),
                        help=f"the backend's interpreter (default: {repository_python()})")
    parser.add_argument("--profile", type=Path, help=f"the QGIS profile folder (default: {default_profile()})")
    args = parser.parse_args(argv)
    try:
        _, message = point_profile_at(args.python, args.profile)
    except OSError as exc:
        print(f"error: cannot update the profile's settings: {exc}", file=sys.stderr)
        return 1
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
