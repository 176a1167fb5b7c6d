"""“Set up backend”: the plan (CUDA or CPU torch from a real `nvidia-smi` on PATH) and real runs with pip."""

from __future__ import annotations

import os
import subprocess  # nosec B404
import sys
import time
from pathlib import Path

import pytest

from rs_refseg_plugin.core import setup_backend as sb
from rs_refseg_plugin.protocol.launch import FOREIGN_PYTHON_ENV, child_environ
from tools import package_plugin as pp

ROOT = Path(__file__).parents[2]
BASE = sb.find_base_python()


def fake_nvidia_smi(folder: Path, line: str = "", rc: int = 0, old: bool = False) -> Path:
    """A real executable named nvidia-smi; `old`: a driver whose nvidia-smi lacks compute_cap."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    reject = ('case "$*" in *compute_cap*) echo "Field compute_cap is not a valid field" >&2; exit 2;; esac\n'
              if old else "")
    exe.write_text(f"#!/bin/sh\n{reject}printf '%s\\n' '{line}'\nexit {rc}\n")
    exe.chmod(0o755)
    return exe


@pytest.mark.parametrize("line, rc, old, index", [
    ("NVIDIA GeForce RTX 4090, 550.54.15, 8.9", 0, False, "cu124"),
    ("NVIDIA H100 80GB HBM3, 580.82.07, 9.0", 0, False, "cu130"),
    ("NVIDIA GeForce GTX 1080, 580.82.07, 6.1", 0, False, "cu126"),  # CUDA 13 dropped Pascal
    ("Tesla V100-SXM2-16GB, 575.57.08, 7.0", 0, False, "cu128"),
    ("Quadro P2000, 535.183.01", 0, True, "cu121"),
    ("Tesla K80, 470.256.02, 3.7", 0, False, "cpu"),  # driver too old for every CUDA wheel
    ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.", 9, False, "cpu"),
])
def test_plan_picks_the_torch_index_from_nvidia_smi(tmp_path, monkeypatch, line, rc, old, index):
    fake_nvidia_smi(tmp_path / "bin", line, rc, old)
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    plan = sb.plan_setup(tmp_path / "venv", backend=ROOT / "backend")
    torch_step = next(s for s in plan.steps if "PyTorch" in s.description)
    assert torch_step.argv[torch_step.argv.index("--index-url") + 1] == f"https://download.pytorch.org/whl/{index}"
    assert plan.torch.label.startswith("CUDA") == (index != "cpu")
    if rc == 0:
        assert plan.torch.gpu is not None and plan.torch.gpu.name == line.split(",")[0]


def test_plan_without_nvidia_smi_is_cpu(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert sb.detect_gpu() is None
    plan = sb.plan_setup(tmp_path / "venv", backend=ROOT / "backend", base_python=BASE)
    assert [s.description.split(" ")[0] for s in plan.steps] == ["Create", "Upgrade", "Install", "Install"]
    create, upgrade, torch, backend = (s.argv for s in plan.steps)
    assert create == (BASE, "-m", "venv", str(tmp_path / "venv"))
    assert upgrade[:3] == (str(sb.venv_python(tmp_path / "venv")), "-m", "pip")
    assert torch[-2:] == ("--index-url", "https://download.pytorch.org/whl/cpu") and "torch" in torch
    assert backend[-1] == f"rsseg[models,batch] @ {(ROOT / 'backend').as_uri()}"  # batch: Ray, for segment_many
    assert all(isinstance(a, str) for s in plan.steps for a in s.argv)
    assert plan.python == sb.venv_python(tmp_path / "venv") and plan.creates_venv


def test_base_python_is_found_when_the_host_is_qgis(tmp_path, monkeypatch):
    qgis = tmp_path / "qgis"
    qgis.write_text("#!/bin/sh\n")
    qgis.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(qgis))
    monkeypatch.setattr(sys, "_base_executable", str(qgis), raising=False)
    found = sb.find_base_python()
    assert Path(found).name.startswith("python") and found != str(qgis)


def test_bundled_backend_in_a_checkout():
    assert sb.bundled_backend() == ROOT / "backend"


@pytest.fixture
def packaged_backend(tmp_path) -> Path:
    """The backend as the deployed zip has it (rs_refseg_plugin/backend), in a path with a space."""
    return pp.stage(ROOT, tmp_path / "plugins dir") / "backend"


def offline_options() -> dict:
    """Install the backend alone, fast, without an index: needs setuptools + wheel in the base Python."""
    proc = subprocess.run([BASE, "-c", "import setuptools, wheel"], capture_output=True, check=False)  # nosec B603
    if proc.returncode != 0:  # build in pip's isolated environment instead (fetches setuptools)
        return dict(upgrade_pip=False, torch=False, no_deps=True)
    return dict(upgrade_pip=False, torch=False, no_deps=True, system_site_packages=True,
                pip_args=("--no-build-isolation", "--no-index"))


def test_real_run_creates_a_venv_with_the_backend(tmp_path, packaged_backend):
    venv = tmp_path / "backend env"
    plan = sb.plan_setup(venv, backend=packaged_backend, **offline_options())
    lines, progress = [], []
    python = sb.run_plan(plan, on_line=lines.append, on_progress=progress.append)
    assert python == sb.venv_python(venv) and python.exists()
    code = "import rsseg; print(rsseg.__version__, rsseg.__file__)"
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path,  # nosec B603
                          check=False, env=child_environ(FOREIGN_PYTHON_ENV))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "0.1.0" and str(venv) in proc.stdout  # installed, not the source tree
    assert lines[0].startswith("[1/2] Create") and any(line.startswith("[2/2] Install the rsseg") for line in lines)
    assert any("Successfully installed rsseg" in line for line in lines)
    assert [p.step for p in progress][0] == 1 and progress[-1].step == 2 and progress[-1].percent == 100.0
    assert all(a.percent <= b.percent for a, b in zip(progress, progress[1:]))


def test_cancel_mid_run_removes_the_venv(tmp_path, packaged_backend):
    venv = tmp_path / "env"
    plan = sb.plan_setup(venv, backend=packaged_backend, **offline_options())
    seen: list[str] = []
    started = time.monotonic()
    with pytest.raises(sb.SetupCancelled):
        # cancel as soon as pip (step 2) prints its first line: the venv is complete by then
        sb.run_plan(plan, on_line=seen.append, cancelled=lambda: any(line.startswith("[2/2]") for line in seen[:-1]))
    assert time.monotonic() - started < 60
    assert not venv.exists()
    assert seen[-1] == f"removed the unfinished environment {venv}"


def test_cancel_while_creating_the_venv_kills_it(tmp_path, packaged_backend):
    venv = tmp_path / "env"
    plan = sb.plan_setup(venv, backend=packaged_backend, **offline_options())
    started = time.monotonic()
    with pytest.raises(sb.SetupCancelled):
        sb.run_plan(plan, cancelled=lambda: time.monotonic() - started > 0.5)
    assert time.monotonic() - started < 10 and not venv.exists()


def test_failing_step_raises_and_removes_the_venv(tmp_path):
    broken = tmp_path / "backend"
    broken.mkdir()
    (broken / "pyproject.toml").write_text("[project\nname = 'rsseg'\n")  # not TOML
    venv = tmp_path / "env"
    plan = sb.plan_setup(venv, backend=broken, **offline_options())
    with pytest.raises(sb.SetupError, match=r"Install the rsseg backend .* failed \(exit code [1-9]"):
        sb.run_plan(plan)
    assert not venv.exists()


def test_missing_backend_is_a_clear_error_before_anything_is_made(tmp_path):
    with pytest.raises(sb.SetupError, match="not the rsseg backend source"):
        sb.plan_setup(tmp_path / "env", backend=tmp_path / "nowhere", base_python=BASE, torch=False)
    assert not (tmp_path / "env").exists()


def test_an_existing_folder_that_is_not_a_venv_is_refused(tmp_path):
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "notes.txt").write_text("keep")
    with pytest.raises(sb.SetupError, match="not a Python environment"):
        sb.plan_setup(tmp_path / "env", backend=ROOT / "backend", base_python=BASE, torch=False)


def test_importable_without_qt():
    code = ("import sys, rs_refseg_plugin.core.setup_backend; "
            "bad = {'qgis', 'PyQt5'} & set(sys.modules); assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code],  # nosec B603
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr


def test_pip_raw_progress_lines_become_progress(tmp_path):
    script = "import time\nfor i in range(1, 5):\n    print(f'Progress {i} of 4', flush=True)\nprint('done')"
    plan = sb.SetupPlan(tmp_path, Path(sys.executable), BASE, ROOT / "backend", None, creates_venv=False,
                        steps=[sb.Step("first", (sys.executable, "-c", "print('one')")),
                               sb.Step("download", (sys.executable, "-c", script), weight=3.0)])
    lines, progress = [], []
    sb.run_plan(plan, on_line=lines.append, on_progress=progress.append)
    assert lines == ["[1/2] first", "one", "[2/2] download", "done"]  # raw progress is not logged
    assert [round(p.percent) for p in progress] == [0, 25, 25, 44, 62, 81, 100, 100]
    assert tmp_path.exists()  # not created by this run: never removed


def test_the_dock_sets_up_a_backend_through_the_dialog(qgis_iface, qgis_new_project, tmp_path, packaged_backend,
                                                        monkeypatch):
    """The dialog's QgsTask runs the real plan; the dock then uses the new interpreter."""
    from qgis.core import QgsApplication

    from rs_refseg_plugin.ui.dock import SegmentDock
    from rs_refseg_plugin.ui.setup_dialog import SetupDialog

    monkeypatch.setenv("RSSEG_PYTHON", sys.executable)
    dock = SegmentDock(qgis_iface)
    venv = tmp_path / "dock env"
    dialog = SetupDialog(dock, venv=venv, backend=packaged_backend, **offline_options())
    assert "Create" in dialog.log.toPlainText() and str(venv) in dialog.summary.text()
    dialog.installed.connect(dock._backend_installed)
    dock.refresh_models = lambda: None  # the new env has the backend but no torch: nothing to list
    dialog.start()
    deadline = time.monotonic() + 300
    while dialog.task is not None and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.05)
    assert dialog.progress.value() == 100, dialog.log.toPlainText()[-2000:]
    assert dock.python.filePath() == str(sb.venv_python(venv)) and "backend ready" in dock.log.toPlainText()
