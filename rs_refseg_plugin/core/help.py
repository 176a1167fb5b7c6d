"""Where the plugin's documentation lives: HELP_URL (the repository's docs/plugin.md, from the
homepage in metadata.txt) and open_help() for the Raster menu's "Help", the dock and the dialogs."""

from __future__ import annotations

from configparser import ConfigParser, Error
from pathlib import Path

from qgis.PyQt.QtCore import QUrl
from qgis.PyQt.QtGui import QDesktopServices

METADATA = Path(__file__).parents[1] / "metadata.txt"
DOC_PATH = "/blob/main/docs/plugin.md"
FALLBACK_HOMEPAGE = "https://github.com/rs-refseg/rs-refseg"  # only if metadata.txt cannot be read


def homepage(metadata: Path = METADATA) -> str:
    """metadata.txt's `homepage` (read as QGIS reads it), without a trailing slash."""
    parser = ConfigParser(interpolation=None)
    try:
        parser.read(metadata, encoding="utf-8")
    except (OSError, UnicodeDecodeError, Error):
        return FALLBACK_HOMEPAGE
    return parser.get("general", "homepage", fallback="").strip().rstrip("/") or FALLBACK_HOMEPAGE


HELP_URL = homepage() + DOC_PATH


def help_url(anchor: str = "") -> str:
    """HELP_URL, or a section of it (`anchor` as GitHub writes a heading's id, e.g. "the-dock")."""
    return f"{HELP_URL}#{anchor}" if anchor else HELP_URL


def open_help(anchor: str = "") -> bool:
    """Open the documentation in the user's browser; False when no browser could be started."""
    return QDesktopServices.openUrl(QUrl(help_url(anchor)))
