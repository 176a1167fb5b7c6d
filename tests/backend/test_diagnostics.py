"""Tests for rsseg.diagnostics on the real environment of this venv."""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

import rsseg
from rsseg.diagnostics import PACKAGES, environment_report, format_report

MODELS = [
    {"id": "clipseg-rd64", "task": "text-segmentation", "weights": "/models/clipseg.safetensors"},
    {"id": "sam-vit-b", "task": "refine", "weights": Path("/models/sam_vit_b.pth"), "size_mb": 358},
]


@pytest.fixture(scope="module")
def report() -> dict:
    return environment_report(MODELS)


def test_report_keys_and_values(report):
    assert set(report) == {"platform", "python", "rsseg", "torch", "torchvision", "packages", "gdal",
                           "models"}
    assert report["python"]["executable"] == sys.executable
    assert report["python"]["version"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert report["rsseg"]["version"] == rsseg.__version__
    assert report["torch"]["version"] == torch.__version__
    assert report["torch"]["cuda_available"] == torch.cuda.is_available()
    assert report["torch"]["cuda_version"] == torch.version.cuda
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert len(report["torch"]["cuda_devices"]) == gpus
    for gpu in report["torch"]["cuda_devices"]:
        assert gpu["name"] and gpu["total_memory_bytes"] > 0
    assert isinstance(report["torch"]["mps_available"], bool)
    assert report["torchvision"]["version"] == metadata.version("torchvision")
    assert report["torchvision"]["mode"] in ("native", "cpu-fallback")
    assert set(report["packages"]) == set(PACKAGES)
    assert report["packages"]["numpy"] == metadata.version("numpy")
    assert report["packages"]["open_clip_torch"] == metadata.version("open_clip_torch")
    assert report["packages"]["segment-anything"] == metadata.version("segment-anything")
    import rasterio

    assert report["gdal"]["rasterio"] == rasterio.__gdal_version__


def test_models_included_as_given(report):
    assert [m["id"] for m in report["models"]] == ["clipseg-rd64", "sam-vit-b"]
    assert report["models"][0] == MODELS[0]
    assert report["models"][1]["weights"] == str(MODELS[1]["weights"])  # JSON cannot hold a Path
    assert report["models"][1]["size_mb"] == 358
    assert environment_report()["models"] == []


def test_json_round_trip(report):
    assert json.loads(json.dumps(report)) == report


def test_plain_text(report):
    text = format_report(report)
    environment, models = text.split("\nModels\n")
    assert "|" not in environment
    lines = environment.splitlines()[1:]
    torch_line = next(line for line in lines if line.split()[0] == "torch")
    os_line = next(line for line in lines if line.split()[0] == "OS")
    column = torch_line.index(torch.__version__)
    assert torch_line.split() == ["torch", torch.__version__]
    assert os_line[column:] == report["platform"]["platform"]  # values form one aligned column
    assert f"(mode: {report['torchvision']['mode']})" in text
    assert "clipseg-rd64" in models and "/models/sam_vit_b.pth" in models


def test_markdown_table(report):
    md = format_report(report, markdown=True)
    lines = md.splitlines()
    assert lines[0].startswith("## ")
    assert f"| torch | {torch.__version__} |" in lines
    tv_row = next(line for line in lines if line.startswith("| torchvision |"))
    assert report["torchvision"]["mode"] in tv_row and report["torchvision"]["version"] in tv_row
    assert "| --- | --- |" in lines
    assert "| clipseg-rd64 | text-segmentation | /models/clipseg.safetensors |" in lines
    environment, models = md.split("### Models")
    assert all(line.count(" | ") == 1 for line in environment.splitlines() if line.startswith("| "))
    assert all(line.count(" | ") == 2 for line in models.splitlines() if line.startswith("| "))


def test_markdown_escapes_pipes(report):
    md = format_report({**report, "models": [{"id": "a|b", "task": "t", "weights": "w"}]}, markdown=True)
    assert "| a\\|b | t | w |" in md.splitlines()


def test_no_models_rendered(report):
    empty = {**report, "models": []}
    assert "none" in format_report(empty, markdown=True).split("### Models")[1]
    assert format_report(empty).rstrip().endswith("none")
