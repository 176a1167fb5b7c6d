"""“Set up backend”: create the environment the models run in (venv + pip), without any UI.

`plan_setup()` lists the steps (create a venv from a real Python, upgrade pip, install a CUDA or
CPU torch, pip-install the backend bundled with the plugin); `run_plan()` runs them one by one,
streams their output, reports progress, honours cancel and, on failure or cancel, removes a venv
it created. Standard library only (Qt and QGIS are imported only to find the default venv path),
so the dock's QgsTask, a test or a script can drive it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess  # nosec B404  # runs Python, pip and nvidia-smi with argument lists, never a shell
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Queue
from typing import Callable, Optional, Sequence, Union

from ..protocol.launch import FOREIGN_PYTHON_ENV, start

PLUGIN_DIR = Path(__file__).resolve().parents[1]
TORCH_INDEX = "https://download.pytorch.org/whl/"
# (CUDA wheel tag, minimum Linux driver, minimum Windows driver): NVIDIA's CUDA toolkit release notes.
CUDA_WHEELS = (
    ("cu130", (580, 65), (580, 88)),
    ("cu129", (575, 51), (576, 2)),
    ("cu128", (570, 26), (570, 65)),
    ("cu126", (560, 28), (560, 76)),
    ("cu124", (550, 54), (551, 61)),
    ("cu121", (530, 30), (531, 14)),
    ("cu118", (520, 61), (520, 6)),
)
# CUDA 13 dropped GPUs before Turing (compute capability 7.5) and PyTorch's cu128+ wheels dropped
# those before Volta (7.0): older cards get the newest wheel that still runs on them.
NEWEST_FOR_CAPABILITY = ((7.0, "cu126"), (7.5, "cu128"))
PROGRESS = re.compile(r"^Progress (\d+) of (\d+)$")  # pip >= 24.1 with --progress-bar raw
PIP_ENV = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
# The backend's extras a set-up installs: the model families' libraries, and Ray for "Segment many rasters"
EXTRAS = ("models", "batch")


class SetupError(Exception):
    """Setting up failed; `str()` is a message for the user."""


class SetupCancelled(SetupError):
    pass


@dataclass(frozen=True)
class GpuInfo:
    name: str
    driver: str
    capability: Optional[float] = None

    @property
    def driver_version(self) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", self.driver)[:2]) or (0,)


@dataclass(frozen=True)
class TorchChoice:
    index_url: Optional[str]  # None: the default index (PyPI)
    label: str  # for the user: "CUDA 12.4 (NVIDIA RTX A4000, driver 550.54.15)" or "CPU"
    gpu: Optional[GpuInfo] = None


@dataclass(frozen=True)
class Step:
    description: str
    argv: tuple[str, ...]
    weight: float = 1.0  # share of the progress bar


@dataclass
class SetupPlan:
    venv: Path
    python: Path  # the venv's interpreter: what the plugin's "backend Python" setting becomes
    base_python: str
    backend: Path
    torch: Optional[TorchChoice]
    creates_venv: bool
    steps: list[Step] = field(default_factory=list)

    def describe(self) -> list[str]:
        return [f"{i}. {s.description}" for i, s in enumerate(self.steps, 1)]


@dataclass(frozen=True)
class SetupProgress:
    step: int  # 1-based
    steps: int
    description: str
    percent: float  # of the whole plan, 0..100


# ------------------------------------------------------------------------------------------ finding

def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def _is_python(path: Optional[Union[str, Path]]) -> bool:
    if not path:
        return False
    p = Path(path)
    return p.name.lower().startswith("python") and p.is_file() and os.access(p, os.X_OK)


def find_base_python() -> str:
    """A real Python to make the venv from. In QGIS desktop sys.executable is QGIS itself."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    prefix = Path(sys.base_prefix)
    candidates = [getattr(sys, "_base_executable", None), sys.executable,
                  prefix / "bin" / f"python{version}", prefix / "bin" / "python3", prefix / "python.exe",
                  prefix / "python3.exe", shutil.which("python3"), shutil.which("python")]
    for candidate in candidates:
        if _is_python(candidate):
            return str(candidate)
    raise SetupError("no Python interpreter was found to create the backend environment from; install "
                     "Python 3.10 or newer (python3 on PATH) or set the backend Python by hand")


def bundled_backend(plugin_dir: Path = PLUGIN_DIR) -> Path:
    """The backend source shipped inside the plugin (packaged zip), or ../backend in a checkout."""
    for candidate in (plugin_dir / "backend", plugin_dir.parent / "backend"):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    raise SetupError(f"the rsseg backend source was not found next to the plugin ({plugin_dir / 'backend'}); "
                     "reinstall the plugin from its zip")


def detect_gpu(timeout: float = 15.0) -> Optional[GpuInfo]:
    """The (weakest) NVIDIA GPU that `nvidia-smi` reports, or None when there is none or it fails."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    for fields in ("name,driver_version,compute_cap", "name,driver_version"):  # old drivers lack compute_cap
        try:
            proc = subprocess.run([exe, f"--query-gpu={fields}", "--format=csv,noheader"],  # nosec B603
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        if proc.returncode == 0:
            break
    else:
        return None
    gpus = []
    for line in proc.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 or not re.match(r"^\d+\.\d+", parts[1]):
            continue
        capability = None
        if len(parts) > 2:
            try:
                capability = float(parts[2])
            except ValueError:
                pass
        gpus.append(GpuInfo(parts[0], parts[1], capability))
    if not gpus:
        return None
    return min(gpus, key=lambda g: (g.capability or 99.0, g.driver_version))


def choose_torch(gpu: Optional[GpuInfo] = None, platform: str = sys.platform) -> TorchChoice:
    """The PyTorch wheel index for this machine: the newest CUDA build its driver runs, else CPU."""
    if platform == "darwin":
        return TorchChoice(None, "CPU / Apple MPS (PyPI)")
    cpu = TorchChoice(TORCH_INDEX + "cpu", "CPU")
    if gpu is None:
        return cpu
    newest = None
    for limit, tag in NEWEST_FOR_CAPABILITY:
        if gpu.capability is not None and gpu.capability < limit:
            newest = tag
            break
    tags = [t for t, _, _ in CUDA_WHEELS]
    for tag, linux, windows in CUDA_WHEELS[tags.index(newest) if newest else 0:]:
        if gpu.driver_version >= (windows if platform == "win32" else linux):
            cuda = f"{tag[2:-1]}.{tag[-1]}"
            return TorchChoice(TORCH_INDEX + tag, f"CUDA {cuda} ({gpu.name}, driver {gpu.driver})", gpu)
    return TorchChoice(cpu.index_url, f"CPU (the NVIDIA driver {gpu.driver} of {gpu.name} is too old for "
                                      "PyTorch's CUDA builds: install a newer driver, then run this again)", gpu)


def _torch_from(spec: Union[str, bool, TorchChoice]) -> Optional[TorchChoice]:
    if spec is False or spec is None:
        return None
    if isinstance(spec, TorchChoice):
        return spec
    if spec is True or spec == "auto":
        return choose_torch(detect_gpu())
    if spec == "cpu":
        return TorchChoice(TORCH_INDEX + "cpu", "CPU")
    if re.fullmatch(r"cu\d{3}", spec):
        return TorchChoice(TORCH_INDEX + spec, f"CUDA {spec[2:-1]}.{spec[-1]}")
    if spec.startswith(("https://", "http://", "file:")):
        return TorchChoice(spec, spec)
    raise SetupError(f"unknown torch build {spec!r}: use auto, cpu, cu126 (a CUDA tag) or an index URL")


# ----------------------------------------------------------------------------------------- planning

def plan_setup(venv: Union[str, Path], *, base_python: Optional[str] = None,
               backend: Optional[Union[str, Path]] = None, torch: Union[str, bool, TorchChoice] = "auto",
               extras: Sequence[str] = EXTRAS, upgrade_pip: bool = True, no_deps: bool = False,
               pip_args: Sequence[str] = (), system_site_packages: bool = False) -> SetupPlan:
    """The steps that make `venv` (the dialog passes settings.managed_venv()) a backend environment.

    `torch`: "auto" (CUDA when nvidia-smi reports a GPU, else CPU), "cpu", a CUDA tag ("cu126"), an
    index URL, or False to leave torch to pip's resolver. `extras`: the backend's optional dependencies
    (EXTRAS: the models' libraries, and Ray for "Segment many rasters"). `no_deps` installs only the backend
    itself (`--no-deps`); `pip_args` go to every pip call (e.g. a proxy, `--no-index`).
    `system_site_packages` lets the venv see the base Python's packages (off: the backend gets its
    own numpy and GDAL-bundling rasterio, independent of QGIS's).
    """
    venv = Path(venv).expanduser().absolute()
    backend = Path(backend).expanduser().absolute() if backend else bundled_backend()
    if not (backend / "pyproject.toml").is_file():
        raise SetupError(f"{backend} is not the rsseg backend source (it has no pyproject.toml)")
    python = venv_python(venv)
    if venv.exists() and not python.exists():
        if any(venv.iterdir()):
            raise SetupError(f"{venv} exists and is not a Python environment; choose an empty or new folder")
    base = base_python or find_base_python()
    choice = _torch_from(torch)
    pip = (str(python), "-m", "pip")
    extra = tuple(pip_args)
    # The upgraded pip (>= 24.1) prints machine-readable download progress.
    progress = ("--progress-bar", "raw") if upgrade_pip else ()
    plan = SetupPlan(venv, python, base, backend, choice, creates_venv=not python.exists())
    if plan.creates_venv:
        options = ("--system-site-packages",) if system_site_packages else ()
        plan.steps.append(Step(f"Create the Python environment {venv}", (base, "-m", "venv") + options + (str(venv),)))
    if upgrade_pip:
        plan.steps.append(Step("Upgrade pip", pip + ("install", "--upgrade", "pip") + extra))
    if choice is not None:
        index = ("--index-url", choice.index_url) if choice.index_url else ()
        plan.steps.append(Step(f"Install PyTorch ({choice.label}; about 1-3 GB)",
                               pip + ("install",) + progress + ("torch", "torchvision") + index + extra, weight=6.0))
    target = f"rsseg[{','.join(extras)}] @ {backend.as_uri()}" if extras else f"rsseg @ {backend.as_uri()}"
    plan.steps.append(Step(f"Install the rsseg backend from {backend}",
                           pip + ("install",) + progress + (("--no-deps",) if no_deps else ()) + (target,) + extra,
                           weight=3.0))
    return plan


# ------------------------------------------------------------------------------------------ running

def _kill(proc: subprocess.Popen) -> None:
    """Stop a step and whatever it started (pip runs build backends as child processes)."""
    if proc.poll() is not None:
        return
    try:
        if sys.platform == "win32":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)],  # nosec B603 B607
                           capture_output=True, check=False)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)
    except (OSError, subprocess.TimeoutExpired):
        pass
    if proc.poll() is None:
        try:
            if sys.platform == "win32":
                proc.kill()
            else:
                os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()


def _pump(proc: subprocess.Popen, lines: Queue) -> None:
    for line in proc.stdout:
        lines.put(line)


def _remove_venv(venv: Path) -> None:
    for attempt in range(5):  # Windows keeps a just-killed interpreter's files locked for a moment
        shutil.rmtree(venv, ignore_errors=True)
        if not venv.exists():
            return
        time.sleep(0.5 * (attempt + 1))


def run_plan(plan: SetupPlan, on_line: Optional[Callable[[str], None]] = None,
             on_progress: Optional[Callable[[SetupProgress], None]] = None,
             cancelled: Optional[Callable[[], bool]] = None, poll: float = 0.1) -> Path:
    """Run the plan's steps in order; return the new interpreter. Raises SetupError / SetupCancelled.

    `on_line` gets every output line of every step (pip's raw progress lines become progress
    instead); `on_progress` gets the step and overall percentage; `cancelled` is polled about ten
    times a second and kills the running step. On failure or cancel a venv this run created is
    removed, so nothing half-installed is left to be picked up as the backend.
    """
    total = sum(s.weight for s in plan.steps) or 1.0
    done = 0.0
    created = plan.creates_venv
    keep_folder = plan.venv.is_dir()  # an empty folder the user chose: emptied again, not removed
    tail: list[str] = []

    def report(index: int, step: Step, fraction: float) -> None:
        if on_progress is not None:
            on_progress(SetupProgress(index, len(plan.steps), step.description,
                                      100.0 * (done + step.weight * fraction) / total))

    try:
        for index, step in enumerate(plan.steps, 1):
            if cancelled is not None and cancelled():
                raise SetupCancelled("Set up backend was cancelled")
            report(index, step, 0.0)
            if on_line is not None:
                on_line(f"[{index}/{len(plan.steps)}] {step.description}")
            try:
                proc = start(step.argv, FOREIGN_PYTHON_ENV, PIP_ENV, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=sys.platform != "win32",
                             creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0))
            except OSError as exc:
                raise SetupError(f"{step.description} failed: cannot run {step.argv[0]}: {exc}") from exc
            lines: Queue = Queue()
            reader = threading.Thread(target=_pump, args=(proc, lines), daemon=True)
            reader.start()
            tail.clear()
            try:
                while True:
                    try:
                        line = lines.get(timeout=poll).rstrip("\r\n")
                    except Empty:
                        line = None
                    if line is not None:
                        match = PROGRESS.match(line.strip())
                        if match:
                            got, size = int(match.group(1)), int(match.group(2))
                            report(index, step, min(got / size, 1.0) if size else 0.0)
                        elif line.strip():
                            tail.append(line)
                            del tail[:-20]
                            if on_line is not None:
                                on_line(line)
                    if cancelled is not None and cancelled():
                        _kill(proc)
                        raise SetupCancelled("Set up backend was cancelled")
                    if line is None and proc.poll() is not None and not reader.is_alive() and lines.empty():
                        break
            finally:
                _kill(proc)
                reader.join(5)
                if proc.stdout is not None:
                    proc.stdout.close()
            if proc.returncode != 0:
                details = "\n".join(tail[-8:])
                raise SetupError(f"{step.description} failed (exit code {proc.returncode})" +
                                 (f":\n{details}" if details else ""))
            done += step.weight
            report(index, step, 0.0)
    except BaseException:
        if created:
            _remove_venv(plan.venv)
            if keep_folder:
                plan.venv.mkdir(parents=True, exist_ok=True)
            if on_line is not None:
                on_line(f"removed the unfinished environment {plan.venv}")
        raise
    if not plan.python.exists():
        raise SetupError(f"the environment was set up but {plan.python} does not exist")
    return plan.python


def setup_backend(venv: Union[str, Path], *, on_line: Optional[Callable[[str], None]] = None,
                  on_progress: Optional[Callable[[SetupProgress], None]] = None,
                  cancelled: Optional[Callable[[], bool]] = None, **options) -> Path:
    """Plan and run in one call; `options` are plan_setup's. Returns the backend interpreter."""
    return run_plan(plan_setup(venv, **options), on_line=on_line, on_progress=on_progress, cancelled=cancelled)
