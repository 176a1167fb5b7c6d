"""Errors carry their fixes as data, never as command lines: the worker's error record says what is wrong
and which fixes apply (protocol.contracts.FIXES), and each front end words them its own way. The CLI
still prints the command; the QGIS plugin names the RS RefSeg dock's button (docs/protocol.md).

Real failures only: an empty weights folder, unknown ids, missing checkpoints, a file the registry has
no checksum for, through the in-process runner (every record passes its JSON encoding), the worker
subprocess and the CLI.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rsseg.cli.main import main
from rsseg.errors import ModelError, RssegError, WeightsError
from rsseg.protocol.client import JobFailed, WorkerClient, WorkerConfig
from rsseg.protocol.contracts import FIXES, FRONT_ENDS, MODEL_STATES, STATE_FIXES, SegmentRequest, fix_text, with_fixes
from rsseg.service.inprocess import InProcessRunner

NEON = Path(__file__).parents[1] / "data" / "neon_osbs_rgb.tif"


def test_every_fix_has_a_wording_for_each_front_end_and_the_gui_names_no_command():
    for name, words in FIXES.items():
        assert set(words) == set(FRONT_ENDS), name
        assert "`" not in words["gui"] and "rsseg " not in words["gui"] and "RS RefSeg dock" in words["gui"], name
        assert "rsseg" in words["cli"] or "--" in words["cli"], name
    assert set(STATE_FIXES) < set(MODEL_STATES) and set(STATE_FIXES.values()) <= set(FIXES)


def test_fixes_render_after_the_first_line_and_unknown_ones_are_left_out():
    assert with_fixes("weights missing", ["download", "import"], "m") == \
        "weights missing: run `rsseg models download m` (or `rsseg models import m FILE`)"
    assert with_fixes("weights missing", ["download", "import"], "m", "gui") == \
        ("weights missing: press Download in the RS RefSeg dock to fetch the weights of m (or Import weights… in "
         "the RS RefSeg dock and choose the weight file of m)")
    assert with_fixes("no start\nlog tail", ["setup"], "", "gui") == \
        "no start: press Set up backend… in the RS RefSeg dock\nlog tail"
    assert with_fixes("plain", [], "m") == "plain" and fix_text(["from-a-newer-backend"], "m") == ""
    assert fix_text(["download"]) == "run `rsseg models download ID`"  # no subject: the CLI's placeholder
    with pytest.raises(ValueError, match="front end"):
        fix_text(["download"], "m", "web")
    with pytest.raises(ValueError, match="unknown fix"):
        RssegError("x", fixes=("reboot",))


@pytest.fixture
def empty_weights(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "weights"
    monkeypatch.setenv("RSSEG_WEIGHTS_DIR", str(folder))
    monkeypatch.delenv("RSSEG_WEIGHTS_MIRROR", raising=False)
    return folder


def _segment(tmp_path: Path, **fields) -> SegmentRequest:
    return SegmentRequest(raster=str(NEON), out_dir=str(tmp_path / "out"), **fields)


def _unpublished_file(weights: Path) -> None:
    """georsclip-vit-b-32's file copied in by hand: the registry states no checksum and no download pinned one."""
    weights.mkdir(parents=True, exist_ok=True)
    (weights / "RS5M_ViT-B-32.pt").write_bytes(b"copied in by hand")


# case: (the request or download, what prepares the weights folder, fixes, subject, CLI argv, CLI fix text)
CASES = {
    "missing-weights": (dict(model="clip-vit-b-16", classes=["tree"]), None, ("download", "import"),
                        "clip-vit-b-16", ["--model", "clip-vit-b-16", "--classes", "tree"],
                        "run `rsseg models download clip-vit-b-16` (or `rsseg models import clip-vit-b-16 FILE`)"),
    "unknown-model": (dict(model="no-such-model", classes=["tree"]), None, ("models",), "",
                      ["--model", "no-such-model", "--classes", "tree"], "see `rsseg models`"),
    "no-checkpoint": (dict(model="rsrefseg-clip-b16-sam-b", sentence="the tall tree"), None, ("checkpoint",),
                      "rsrefseg-clip-b16-sam-b", ["--model", "rsrefseg-clip-b16-sam-b", "--sentence", "the tall tree"],
                      "give the checkpoint of an `rsseg train` run (--checkpoint RUN/checkpoints/step-N.json)"),
    "missing-checkpoint": (dict(model="rsrefseg-test", sentence="the tall tree", checkpoint="/nonexistent/step-1.json"),
                           None, ("checkpoint",), "rsrefseg-test",
                           ["--model", "rsrefseg-test", "--sentence", "the tall tree", "--checkpoint",
                            "/nonexistent/step-1.json"], "--checkpoint RUN/checkpoints/step-N.json"),
    "unpublished-weights": (dict(model="georsclip-vit-b-32", classes=["tree"]), _unpublished_file, ("download",),
                            "georsclip-vit-b-32", ["--model", "georsclip-vit-b-32", "--classes", "tree"],
                            "it has no checksum to be checked against (the registry states none and no download here "
                            "pinned one): run `rsseg models download georsclip-vit-b-32`"),
    "no-download-url": ("litemedsam", None, ("import",), "litemedsam", None,
                        "run `rsseg models import litemedsam FILE`"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_typical_failures_send_fixes_not_commands_and_the_cli_still_tells_the_command(case, tmp_path, empty_weights,
                                                                                     capsys):
    job, prepare, fixes, subject, argv, cli_fix = CASES[case]
    if prepare is not None:
        prepare(empty_weights)
    with InProcessRunner() as runner, pytest.raises(JobFailed) as info:
        if isinstance(job, str):
            runner.download(job)
        else:
            runner.segment(_segment(tmp_path, **job))
    failed = info.value
    assert "`" not in str(failed) and "rsseg " not in str(failed) and "\n" not in str(failed), str(failed)
    assert (failed.fixes, failed.subject) == (fixes, subject) and failed.code in ("ModelError", "WeightsError")
    gui = failed.text("gui")
    assert gui.startswith(f"{failed}: ") and "RS RefSeg dock" in gui and "`" not in gui and "rsseg " not in gui
    assert failed.text("cli") == f"{failed}: {fix_text(fixes, subject)}" and cli_fix in failed.text("cli")
    command = ["segment", str(NEON), *argv, "--out", str(tmp_path / "cli"), "--quiet"] if argv else \
        ["models", "download", job, "--quiet"]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rsseg: error: {failed}") and cli_fix in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cli").exists()


def test_the_worker_subprocess_sends_the_fixes(empty_weights):
    with WorkerClient(WorkerConfig(sys.executable, start_timeout=60, idle_timeout=60)) as client:
        with pytest.raises(JobFailed) as info:
            client.download("no-such-model")
        assert (info.value.code, info.value.fixes, info.value.subject) == ("ModelError", ("models",), "")
        with pytest.raises(JobFailed) as info:
            client.download("litemedsam")
    assert (info.value.fixes, info.value.subject) == (("import",), "litemedsam")
    assert info.value.text("gui").endswith(": press Import weights… in the RS RefSeg dock and choose the weight file "
                                           "of litemedsam")


def test_errors_keep_their_fixes_when_wrapped(tmp_path, empty_weights):
    """checked_copy and verify_model pass the fixes of the errors they gather on."""
    from rsseg.models import get_spec
    from rsseg.weights import checked_copy, verify_model

    spec = get_spec("sam-vit-b")
    with pytest.raises(WeightsError) as info:
        verify_model(spec)
    assert info.value.fixes == ("download", "import") and "is missing from" in str(info.value)
    stub = tmp_path / "stub.pth"
    stub.write_bytes(b"7 bytes")
    with pytest.raises(WeightsError) as info:
        checked_copy(stub, spec)
    assert "it was not loaded as the weights of sam-vit-b" in str(info.value) and info.value.subject == "sam-vit-b"
    assert isinstance(info.value, ModelError)
