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
    from tools.package_plugin import default_profile
except ImportError:  # run as a script: tools/ is sys.path[0]
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

def qt_escape(text: str) -> str:
    """A string as QSettings writes an ini value (QSettingsPrivate::iniEscapedString, no codec)."""
    out: list[str] = []
    quotes = False
    escape_next_if_hex = False
    data = text.encode("utf-16-le", "surrogatepass")  # Qt escapes UTF-16 code units
    units = [int.from_bytes(data[i:i + 2], "little") for i in range(0, len(data), 2)]
    named = {0x07: "\\a", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x0B: "\\v"}
    for unit in units:
        char = chr(unit) if unit < 0xD800 or unit > 0xDFFF else ""
        if char in (";", ",", "="):
            quotes = True
        if escape_next_if_hex and char and char in "0123456789abcdefABCDEF":
            out.append(f"\\x{unit:x}")
            continue
        escape_next_if_hex = False
        if unit == 0:
            out.append("\\0")
            escape_next_if_hex = True
        elif unit in named:
            out.append(named[unit])
        elif char in ('"', "\\"):
            out.append("\\" + char)
        elif unit <= 0x1F or unit >= 0x7F:
            out.append(f"\\x{unit:x}")
            escape_next_if_hex = True
        else:
            out.append(char)
    value = "".join(out)
    if value.startswith("@"):
        value = "@" + value  # QSettings' marker of a typed value (@Variant(...), @ByteArray(...))
    if quotes or value.startswith(" ") or value.endswith(" "):
        value = f'"{value}"'
    return value


def qt_unescape(raw: str) -> Union[str, list[str], None]:
    """An ini value as QSettings reads it: a string, a list (unquoted commas), None for @Invalid().
    Other typed values (@Variant(...), @ByteArray(...)) come back as their text."""
    simple = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
              '"': '"', "?": "?", "'": "'", "\\": "\\"}
    items: list[str] = []
    current: list[str] = []
    quoted_value = in_quotes = False
    i, n = 0, len(raw)

    def skip_spaces(j: int) -> int:
        while j < n and raw[j] in " \t":
            j += 1
        return j

    i = skip_spaces(i)
    while i < n:
        ch = raw[i]
        if ch == "\\":
            i += 1
            if i >= n:
                break
            ch = raw[i]
            i += 1
            if ch in simple:
                current.append(simple[ch])
            elif ch == "x":
                j = i
                while j < n and raw[j] in "0123456789abcdefABCDEF":
                    j += 1
                if j > i:
                    current.append(chr(int(raw[i:j], 16) & 0xFFFF))
                    i = j
            elif ch in "01234567":
                j = i
                while j < n and raw[j] in "01234567":
                    j += 1
                current.append(chr(int(raw[i - 1:j], 8) & 0xFFFF))
                i = j
        elif ch == '"':
            i += 1
            quoted_value = True
            in_quotes = not in_quotes
            if not in_quotes:
                i = skip_spaces(i)
        elif ch == "," and not in_quotes:
            text = "".join(current)
            items.append(text if quoted_value else text.rstrip(" \t"))
            current, quoted_value = [], False
            i = skip_spaces(i + 1)
        else:
            j = i + 1
            while j < n and raw[j] not in '\\",':
                j += 1
            current.append(raw[i:j])
            i = j
    text = "".join(current)
    text = text if quoted_value else text.rstrip(" \t")
    if items:
        # surrogate pairs written as two \x escapes become one character again
        return [_join_surrogates(t) for t in items + [text]]
    text = _join_surrogates(text)
    if text.startswith("@@"):
        return text[1:]
    if text == "@Invalid()":
        return None
    return text


def _join_surrogates(text: str) -> str:
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


# ----------------------------------------------------------------------------------- the ini file

def _read_lines(ini: Path) -> list[str]:
    if not ini.exists():
        return []
    with ini.open(encoding="utf-8", errors="surrogateescape", newline="") as f:
        return f.read().splitlines(keepends=True)


def _section_span(lines: list[str], section: str) -> Optional[tuple[int, int]]:
    """(header line, end) of `[section]`: end is the next section's header or the end of the file."""
    start = next((i for i, line in enumerate(lines) if line.strip() == f"[{section}]"), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    return start, end


def _key_lines(lines: list[str], span: tuple[int, int], key: str) -> list[int]:
    return [i for i in range(span[0] + 1, span[1])
            if "=" in lines[i] and lines[i].split("=", 1)[0].strip() == key]


def read_ini_value(ini: Path, section: str = SECTION, key: str = KEY) -> Union[str, list[str], None]:
    """The value of `section/key` as QSettings reads it; None when absent."""
    lines = _read_lines(ini)
    span = _section_span(lines, section)
    found = _key_lines(lines, span, key) if span else []
    if not found:
        return None
    return qt_unescape(lines[found[0]].split("=", 1)[1].rstrip("\r\n"))


def write_ini_value(ini: Path, value: str, section: str = SECTION, key: str = KEY) -> None:
    """Set `section/key` to the string `value`, editing only that line (or adding it, and the section)."""
    lines = _read_lines(ini)
    text = "".join(lines)
    newline = "\r\n" if "\r\n" in text else "\n"
    entry = f"{key}={qt_escape(value)}{newline}"
    span = _section_span(lines, section)
    if span is None:
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += newline
        if lines and lines[-1].strip():
            lines.append(newline)
        lines += [f"[{section}]{newline}", entry]
    else:
        found = _key_lines(lines, span, key)
        if found:
            lines[found[0]] = entry
            for i in reversed(found[1:]):
                del lines[i]
        else:
            insert = span[1]
            while insert > span[0] + 1 and not lines[insert - 1].strip():
                insert -= 1  # keep the blank line that separates sections after our entry
            if not lines[insert - 1].endswith(("\n", "\r")):
                lines[insert - 1] += newline
            lines.insert(insert, entry)
    ini.parent.mkdir(parents=True, exist_ok=True)
    partial = ini.with_name(ini.name + ".part")
    partial.write_text("".join(lines), encoding="utf-8", errors="surrogateescape", newline="")
    partial.replace(ini)


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
