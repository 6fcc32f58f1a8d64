"""The fixes a non-finite error suggests are fixes the validator accepts: for every level of
every bundled spec and ablation, each ``set PATH: VALUE`` of :func:`nlc.runtime.diagnose.hint`
applied as an override gives a valid spec (HOPE's rule, the exact rules and CMS levels take
no grad_clip, so it is not offered there)."""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from nlc.graph.validate import load_spec, validate
from nlc.ir.resolve import resolve
from nlc.runtime.diagnose import hint

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted(ROOT.glob("specs/*.yaml")) + sorted(ROOT.glob("specs/ablations/*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_suggested_setting_validates(path: Path) -> None:
    spec = load_spec(path)
    ir = resolve(spec)
    model = SimpleNamespace(ir=ir, spec=spec)
    checked = 0
    for name, level in ir.levels.items():
        if level.type in ("optimizer", "persistent"):
            continue
        layer = next((lay.name for lay in ir.layers if name in lay.levels), None)
        for field, value in re.findall(r"\bset (levels\.[\w.]+): (\S+) \(", hint(model, {"level": name, "layer": layer})):
            spec, issues = validate(path, [f"{field}={value}"])
            assert spec is not None, f"{path.stem} level {name}: the hint's {field}: {value} is refused: " + \
                "; ".join(i.message for i in issues if i.severity == "error")
        checked += 1
    assert checked > 0


def test_hope_is_not_offered_an_inner_clip() -> None:
    spec = load_spec(ROOT / "specs" / "hope.yaml")
    text = hint(SimpleNamespace(ir=resolve(spec), spec=spec), {"level": "memory", "layer": "b0_r0_memory"})
    assert "levels.memory.update.grad_clip" not in text and "levels.memory.update.lr.max" in text


def test_a_memory_that_takes_a_clip_is_offered_one() -> None:
    spec = load_spec(ROOT / "specs" / "yaad.yaml")
    text = hint(SimpleNamespace(ir=resolve(spec), spec=spec), {"level": "yaad", "layer": None})
    assert text.startswith("set levels.yaad.update.grad_clip: 1.0 (none now)")
