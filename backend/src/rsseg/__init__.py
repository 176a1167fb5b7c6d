"""rsseg: text-prompted segmentation of georeferenced remote-sensing rasters.

Importing the package is cheap: torch and the model libraries are imported only by the modules
that need them, so the CLI answers `--help` and the error paths quickly.
"""

__version__ = "0.1.0"
