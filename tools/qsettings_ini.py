"""QGIS's settings file (QGIS3.ini, written by Qt's QSettings) edited line by line.

configparser would rewrite the whole file (lower-cased keys, QSettings' `\\` and `%` escapes,
@Variant values); these functions read or set one key and leave every other line as it was, and
write the file through a `.part` file and a rename so QGIS never reads half of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union


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


def read_ini_value(ini: Path, section: str, key: str) -> Union[str, list[str], None]:
    """The value of `section/key` as QSettings reads it; None when absent."""
    lines = _read_lines(ini)
    span = _section_span(lines, section)
    found = _key_lines(lines, span, key) if span else []
    if not found:
        return None
    return qt_unescape(lines[found[0]].split("=", 1)[1].rstrip("\r\n"))


def write_ini_value(ini: Path, value: str, section: str, key: str) -> None:
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
