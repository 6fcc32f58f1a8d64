"""benchmarks/task_run.py trains one comparison model on one synthetic task and writes its curve."""
from __future__ import annotations

import json

from benchmarks import task_run


def test_a_short_run_writes_its_curve_and_test_accuracy_at_every_shape(tmp_path, capsys):
    out = tmp_path / "copy.json"
    task_run.main(["titans_lmm", "copy", "--width", "16", "--steps", "3", "--every", "2", "--json", str(out)])
    result = json.loads(out.read_text())
    assert (result["model"], result["task"], result["width"], result["steps"]) == ("Titans (LMM)", "copy", 16, 3)
    assert [point["step"] for point in result["curve"]] == [2, 3]
    assert all(set(point["accuracy"]) == {"128"} for point in result["curve"])  # the training shape
    assert set(result["run"]["accuracy"]) == {"128", "256", "512"}  # and the longer test shapes
    assert all(0.0 <= a <= 1.0 for a in result["run"]["accuracy"].values())
    assert result["chance"] == 1 / 14 and result["params"] > 0
    assert "Titans (LMM) on copy" in capsys.readouterr().out
