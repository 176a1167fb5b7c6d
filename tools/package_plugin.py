"""Build the QGIS plugin zip (`make package`) and install it into a QGIS profile (`make deploy`).

Standard library only, so it runs with any Python 3.9+ (Bandit, when installed, checks the staged
sources). The zip holds one folder, `rs_refseg_plugin/`: the plugin with its `protocol` link
replaced by real files, and the backend's source under `rs_refseg_plugin/backend/` so that
"Set up backend" can pip-install it from the installed plugin.

    python tools/package_plugin.py package [--out dist]
    python tools/package_plugin.py deploy [--zip dist/rs_refseg_plugin-0.1.0.zip] [--profile DIR]
"""

from __future__ import annotations

import argparse
import configparser
import os
import re
import shutil
import subprocess  # nosec B404  # runs Bandit on the staged sources, fixed argument list, no shell
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Optional

try:
    from tools import qsettings_ini
except ImportError:  # run as a script: tools/ is sys.path[0]
    import qsettings_ini  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_NAME = "rs_refseg_plugin"
MAX_BYTES = 25 * 1024 * 1024  # plugins.qgis.org's upload limit
REQUIRED = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email", "repository")
RECOMMENDED = ("tracker", "homepage", "icon", "hasProcessingProvider", "supportsQt6", "qgisMaximumVersion")
QGIS_MAXIMUM = "4.99"  # runs on QGIS 4 (Qt6) too
BINARY_SUFFIXES = (".so", ".pyd", ".dll", ".exe", ".dylib", ".pyc", ".pyo", ".o", ".a", ".lib")
SKIP_DIRS = {"__pycache__", ".git", ".pytest_cache", ".mypy_cache", "build", "dist"}
BACKEND_FILES = ("pyproject.toml", "README.md")
VERSION = re.compile(r"^\d+(\.\d+){1,2}$")
URL = re.compile(r"^https?://\S+$")


class PackageError(Exception):
    """A problem with the plugin's files or metadata; the message says what to fix."""


# ---------------------------------------------------------------------------------------- metadata

def read_metadata(plugin_dir: Path) -> dict[str, str]:
    """metadata.txt's [general] section, read the way QGIS reads it (configparser, case kept)."""
    path = plugin_dir / "metadata.txt"
    if not path.is_file():
        raise PackageError(f"{path} is missing")
    parser = configparser.ConfigParser()
    parser.optionxform = str  # QGIS's keys are camelCase
    try:
        parser.read(path, encoding="utf-8")
        return dict(parser.items("general"))
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise PackageError(f"{path} cannot be read as QGIS reads it: {exc}") from exc


def validate_metadata(plugin_dir: Path) -> dict[str, str]:
    """Check every field QGIS's plugin repository requires, and ours; raise naming the first bad field."""
    meta = read_metadata(plugin_dir)
    where = plugin_dir / "metadata.txt"

    def bad(field: str, why: str) -> PackageError:
        return PackageError(f"{where}: field '{field}' {why}")

    for field in REQUIRED + RECOMMENDED:
        if not meta.get(field, "").strip():
            raise bad(field, "is missing or empty (required for the QGIS plugin repository)"
                      if field in REQUIRED else "is missing or empty (required by this project)")
    for field in ("qgisMinimumVersion", "qgisMaximumVersion", "version"):
        if not VERSION.match(meta[field].strip()):
            raise bad(field, f"must look like 3.22 or 0.1.0, not {meta[field]!r}")
    if meta["qgisMaximumVersion"].strip() != QGIS_MAXIMUM:
        raise bad("qgisMaximumVersion", f"must be {QGIS_MAXIMUM} (the plugin supports QGIS 4)")
    if not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", meta["email"].strip()):
        raise bad("email", f"is not an e-mail address: {meta['email']!r}")
    for field in ("repository", "tracker", "homepage"):
        if not URL.match(meta[field].strip()):
            raise bad(field, f"must be an http(s) URL, not {meta[field]!r}")
    if not (plugin_dir / meta["icon"].strip()).is_file():
        raise bad("icon", f"names {meta['icon']!r}, which is not a file in {plugin_dir}")
    if meta["hasProcessingProvider"].strip().lower() not in ("yes", "no"):
        raise bad("hasProcessingProvider", "must be yes or no")
    if meta["supportsQt6"].strip().lower() not in ("true", "yes"):
        raise bad("supportsQt6", "must be True (the plugin imports Qt only through qgis.PyQt)")
    if not (plugin_dir / "LICENSE").is_file():
        raise PackageError(f"{plugin_dir / 'LICENSE'} is missing (the QGIS plugin repository requires it)")
    return meta


# ------------------------------------------------------------------------------------------ staging

def _copy_tree(src: Path, dst: Path, allowed_root: Path) -> None:
    """Copy src to dst, following links (only to files inside allowed_root) and skipping caches."""
    for dirpath, dirnames, filenames in os.walk(src, followlinks=True):
        here = Path(dirpath)
        if not here.resolve().is_relative_to(allowed_root):
            raise PackageError(f"{here} links outside {allowed_root}")
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo")):
                continue  # byte code is rebuilt by QGIS's Python
            source = here / name
            if not source.resolve().is_relative_to(allowed_root):
                raise PackageError(f"{source} links outside {allowed_root}")
            if name.lower().endswith(BINARY_SUFFIXES):
                raise PackageError(f"{source} is a binary; the plugin package must not contain any")
            target = dst / source.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)  # copies the content of a link's target, not the link


def stage(root: Path, staging: Path) -> Path:
    """Lay the plugin folder out under staging as it will be in the zip; return that folder."""
    plugin_src = root / PLUGIN_NAME
    out = staging / PLUGIN_NAME
    _copy_tree(plugin_src, out, root.resolve())
    backend = root / "backend"
    for name in BACKEND_FILES:
        if not (backend / name).is_file():
            raise PackageError(f"{backend / name} is missing")
        (out / "backend").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(backend / name, out / "backend" / name)
    _copy_tree(backend / "src" / "rsseg", out / "backend" / "src" / "rsseg", root.resolve())
    return out


def run_bandit(folder: Path) -> Optional[str]:
    """Bandit over the staged sources; None when Bandit is not installed, else its verdict line."""
    try:
        import bandit  # noqa: F401 - only checks that it is installed
    except ImportError:
        return None
    proc = subprocess.run([sys.executable, "-m", "bandit", "-q", "-r", str(folder)],  # nosec B603
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PackageError("Bandit reports problems in the packaged sources:\n" + proc.stdout + proc.stderr)
    return "clean"


def check_zip(path: Path) -> tuple[int, int]:
    """The layout rules QGIS's installer and plugin repository rely on; returns (bytes, files)."""
    size = path.stat().st_size
    if size >= MAX_BYTES:
        raise PackageError(f"{path} is {size / 1e6:.1f} MB; the limit is {MAX_BYTES / 1e6:.0f} MB")
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        tops = {n.split("/", 1)[0] for n in names}
        if tops != {PLUGIN_NAME}:
            raise PackageError(f"{path} must hold exactly one top folder {PLUGIN_NAME}/, not {sorted(tops)}")
        for info in infos:
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise PackageError(f"{path}: {info.filename} is a symbolic link")
            if info.filename.lower().endswith(BINARY_SUFFIXES) or "__pycache__" in info.filename:
                raise PackageError(f"{path}: {info.filename} is a binary or a cache file")
        # QGIS's "Install from ZIP" takes the folder of the first *metadata.txt in sorted order.
        metas = sorted(n for n in names if n.endswith("metadata.txt"))
        if metas != [f"{PLUGIN_NAME}/metadata.txt"]:
            raise PackageError(f"{path}: only {PLUGIN_NAME}/metadata.txt may end in metadata.txt, found {metas}")
    return size, len(names)


def build(root: Path = ROOT, out_dir: Path = ROOT / "dist", bandit: bool = True) -> Path:
    """Validate, stage and zip the plugin; return the zip's path."""
    meta = validate_metadata(root / PLUGIN_NAME)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{PLUGIN_NAME}-{meta['version'].strip()}.zip"
    with tempfile.TemporaryDirectory(prefix="rsseg-package-") as tmp:
        folder = stage(root, Path(tmp))
        verdict = run_bandit(folder) if bandit else "skipped"
        print(f"bandit: {verdict or 'not installed, skipped (make setup installs it)'}")
        partial = target.with_suffix(".zip.part")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            for file in sorted(p for p in folder.rglob("*") if p.is_file()):
                info = zipfile.ZipInfo(file.relative_to(folder.parent).as_posix(), date_time=(2020, 1, 1, 0, 0, 0))
                info.external_attr = 0o100644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, file.read_bytes())
    try:
        size, count = check_zip(partial)
    except PackageError:
        partial.unlink()
        raise
    partial.replace(target)
    print(f"{target}: {size / 1024:.0f} KiB, {count} files")
    return target


# ------------------------------------------------------------------------------------------- deploy

def default_profile() -> Path:
    """The user's default QGIS profile folder on this platform."""
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "QGIS" / "QGIS3" / "profiles" / "default"


def enable_in_ini(ini: Path, name: str = PLUGIN_NAME) -> None:
    """Set `[PythonPlugins] name=true` in QGIS's settings file, leaving every other line as it was."""
    qsettings_ini.write_ini_value(ini, "true", "PythonPlugins", name)


def deploy(zip_path: Path, profile: Optional[Path] = None) -> Path:
    """Install the zip into profile/python/plugins (replacing an older copy) and enable it."""
    profile = Path(profile) if profile else default_profile()
    check_zip(zip_path)
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    target = plugins / PLUGIN_NAME
    incoming = Path(tempfile.mkdtemp(prefix=".rsseg-deploy-", dir=plugins))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for name in zf.namelist():
                dest = (incoming / name).resolve()
                if not dest.is_relative_to(incoming.resolve()):
                    raise PackageError(f"{zip_path}: {name} would be written outside the plugins folder")
            zf.extractall(incoming)
        if target.is_symlink() or target.is_file():
            target.unlink()  # a developer's link to a checkout: remove the link, never its target
        elif target.exists():
            shutil.rmtree(target)
        (incoming / PLUGIN_NAME).replace(target)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    enable_in_ini(profile / "QGIS" / "QGIS3.ini")
    print(f"installed {target} and enabled it in {profile / 'QGIS' / 'QGIS3.ini'} "
          "(restart QGIS; a running QGIS may overwrite the ini when it exits)")
    return target


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("package", help="validate metadata.txt and build dist/rs_refseg_plugin-<version>.zip")
    p.add_argument("--out", type=Path, default=ROOT / "dist")
    p.add_argument("--no-bandit", action="store_true", help="do not run Bandit on the packaged sources")
    d = sub.add_parser("deploy", help="install the zip into a QGIS profile and enable it")
    d.add_argument("--zip", type=Path, help="default: build it first into dist/")
    d.add_argument("--profile", type=Path, help=f"default: {default_profile()}")
    v = sub.add_parser("validate", help="only check metadata.txt")
    v.add_argument("plugin_dir", type=Path, nargs="?", default=ROOT / PLUGIN_NAME)
    args = parser.parse_args(argv)
    try:
        if args.command == "package":
            build(ROOT, args.out, bandit=not args.no_bandit)
        elif args.command == "deploy":
            deploy(args.zip or build(ROOT, ROOT / "dist"), args.profile)
        else:
            meta = validate_metadata(args.plugin_dir)
            print(f"{args.plugin_dir / 'metadata.txt'}: valid ({meta['name']} {meta['version']})")
    except PackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
