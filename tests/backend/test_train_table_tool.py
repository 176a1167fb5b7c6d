"""`make train-table` (tools/train_table.py) keeps working: a quick run with a test-size family on the real
NEON raster goes through the whole protocol (west 60 % labels, bundle, run_segment, scores on the east)."""

from __future__ import annotations

import json

import pytest

from tools import train_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_table_command_runs_a_case_end_to_end(tmp_path, capsys):
    rows = tmp_path / "rows.json"
    assert train_table.main(["--quick", "--cases", "neon-trees", "--families", "unetformer-r18-tiny",
                             "--workdir", str(tmp_path / "work"), "--json", str(rows)]) == 0
    (row,) = json.loads(rows.read_text())
    assert row["case"] == "neon-trees" and row["family"] == "unetformer-r18-tiny" and row["test_pixels"] > 0
    assert 0.0 <= row["iou"] <= 1.0 and 0.5 < row["all_class"] < 0.6  # trees are 56 % of the labelled east
    assert "| neon-trees | unetformer-r18-tiny |" in capsys.readouterr().out
