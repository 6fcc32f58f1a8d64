"""benchmarks/calibrate_task.py runs the bench's calibration on one task and writes its verdict."""
from __future__ import annotations

import json

from benchmarks import calibrate_task


def test_a_two_step_calibration_writes_its_curve_and_does_not_count_the_task(tmp_path, capsys):
    out = tmp_path / "copy.json"
    calibrate_task.main(["copy", "--width", "16", "--max-steps", "2", "--every", "1", "--json", str(out)])
    result = json.loads(out.read_text())
    assert [step for step, _ in result["curve"]] == [1, 2] and result["width"] == 16
    assert all(0.0 <= accuracy < 0.9 for _, accuracy in result["curve"])  # untrained: far below the 90% target
    assert (result["counts"], result["budget"], result["test_accuracy"]) == (False, None, None)
    assert result["reason"].startswith("not learnable at this size within 2 steps")
    assert "copy: NOT counted" in capsys.readouterr().out
