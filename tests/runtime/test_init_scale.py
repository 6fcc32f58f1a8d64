"""Output scales at initialisation (nlc.runtime.init_scale, ``nlc show --init-stats``): every
bundled spec starts inside the documented gain band with the loss of a uniform guess, and a
spec that starts far outside it is reported (status 3).

Notation: RMS root mean square; gain = RMS(mixer output) / RMS(mixer input).
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import nlc
from nlc.cli.app import app
from nlc.runtime.init_scale import BAND, init_scales
from nlc.status import NON_FINITE

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = sorted(str(p.relative_to(ROOT / "specs")) for p in (ROOT / "specs").rglob("*.yaml")
                 if p.parent.name not in ("invalid", "base", "search"))

# a plain matrix memory writing with lr 100 on unnormalised keys: its reads grow with every token
LOUD = """\
nlc: 1
extends: base/small.yaml
levels:
  loud:
    type: memory
    objective: {kind: dot}
    update: {rule: gd, lr: 100}
  mlp: {type: mlp}
model:
  blocks: [{layers: [loud, mlp]}]
"""


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_specs_start_inside_the_band(name):
    spec = nlc.load_spec(ROOT / "specs" / name, overrides=["train.seq_len=64"])
    torch.manual_seed(0)
    model = nlc.compile(spec)
    scales, loss = init_scales(model, 2, 64)
    assert scales, "no mixer was measured"
    outside = [(s.layer, s.gain_min, s.gain_max) for s in scales if not s.in_band]
    assert not outside, f"outside [{BAND[0]}, {BAND[1]}]: {outside}"
    assert abs(loss - math.log(256)) < 0.15  # near-uniform logits at initialisation


def test_a_loud_memory_is_reported(tmp_path):
    path = tmp_path / "loud.yaml"
    path.write_text(LOUD, encoding="utf-8")
    torch.manual_seed(0)
    scales, _ = init_scales(nlc.compile(nlc.load_spec(path)), 2, 64)
    loud = [s for s in scales if s.level == "loud"]
    assert loud and not any(s.in_band for s in loud) and max(s.gain_max for s in loud) > BAND[1]
    result = CliRunner().invoke(app, ["show", str(path), "--init-stats"])
    assert result.exit_code == NON_FINITE
    assert "loud" in result.output and "NO" in result.output


def test_the_table_names_every_layer():
    result = CliRunner().invoke(app, ["show", str(ROOT / "specs" / "hope.yaml"), "train.seq_len=32", "--init-stats"])
    assert result.exit_code == 0, result.output
    rows = [line.split()[0] for line in result.output.splitlines() if line.startswith("b0_")]
    assert rows == ["b0_r0_memory", "b0_r0_cms_fast", "b0_r0_cms_mid", "b0_r0_cms_slow",
                    "b0_r1_memory", "b0_r1_cms_fast", "b0_r1_cms_mid", "b0_r1_cms_slow"]
