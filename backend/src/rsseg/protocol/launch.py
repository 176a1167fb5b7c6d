"""Starting a backend interpreter: one environment rule and one Popen for every caller.

The plugin starts the worker and the set-up steps (venv, pip) from QGIS's own Python, which exports
its home and path (notably on Windows) and may run inside another virtual environment: those
variables would make the backend's Python load QGIS's packages, so callers from a foreign Python
drop FOREIGN_PYTHON_ENV. Output is line-buffered UTF-8 text so progress streams as it happens.
"""

from __future__ import annotations

import os
import subprocess  # nosec B404  # argument lists only, never a shell
from typing import Any, Iterable, Mapping, Optional, Sequence

FOREIGN_PYTHON_ENV = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")


def child_environ(drop: Iterable[str] = (), extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """This process's environment without `drop`, unbuffered UTF-8 Python output, then `extra`."""
    dropped = set(drop)
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", **(extra or {}))
    return env


def start(argv: Sequence[str], drop: Iterable[str] = (), extra: Optional[Mapping[str, str]] = None,
          **popen: Any) -> subprocess.Popen:
    """Popen of `argv` (no shell) in child_environ(drop, extra), reading and writing text line by line.

    Raises OSError when the program cannot be started; callers turn it into their own message."""
    return subprocess.Popen(  # nosec B603  # an argument list from the user's settings or our own plan
        list(argv), env=child_environ(drop, extra), text=True, encoding="utf-8", errors="replace", bufsize=1,
        **popen)
