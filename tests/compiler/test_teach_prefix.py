"""The teach loop runs the layers before the first teaching level once per call
(``before_teach``), not once per teach segment: the same logits and outer gradients as
running every layer segment by segment (what a model without the split does), on every
bundled spec that has the split; and the split stops at the first layer a teach signal can
reach (a teaching level, a nested level, a transfer source)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import nlc
from nlc.graph.validate import load_spec
from nlc.ir.resolve import resolve
from nlc.lower.emit import _nested_layers, _teach_free_prefix
from tests.compiler.generated_helpers import unsplit

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted(p.stem for p in (ROOT / "specs").glob("*.yaml"))
SPLIT = [n for n in SPECS if "def before_teach" in (ROOT / "codegen" / f"{n}.py").read_text()]
SMALL = ("model.width=32", "model.heads=2")


def logits_and_grads(model, x, y):
    model.zero_grad(set_to_none=True)
    logits, _ = model(x, targets=y)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_the_bundled_hope_and_cms_models_have_the_split():
    assert {"hope", "hope_attention", "cms", "cms_nested"} <= set(SPLIT)


@pytest.mark.parametrize("name", SPLIT)
def test_running_the_teach_free_layers_once_changes_nothing(name):
    x = torch.randint(0, 256, (2, 80), generator=torch.Generator().manual_seed(1))
    y = torch.roll(x, -1, 1)
    split = nlc.compile(f"specs/{name}.yaml", overrides=SMALL, seed=0)
    whole = unsplit(nlc.compile(f"specs/{name}.yaml", overrides=SMALL, seed=0))
    (a, grads_a), (b, grads_b) = logits_and_grads(split, x, y), logits_and_grads(whole, x, y)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert grads_a.keys() == grads_b.keys()
    for key in grads_a:
        torch.testing.assert_close(grads_a[key], grads_b[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("name", SPECS)
def test_the_split_stops_where_a_teach_signal_can_reach(name):
    ir = resolve(load_spec(ROOT / "specs" / f"{name}.yaml"))
    nested = _nested_layers(ir)
    model = nlc.compile(ROOT / "specs" / f"{name}.yaml")
    teach = set(model.schedule.teach)
    sources = {src for layer in ir.layers for _, src in layer.transfers}
    count = _teach_free_prefix(ir, teach, set(nested) | sources)
    for layer in ir.layers[:count]:
        assert not teach & set(layer.levels) and layer.name not in nested and layer.name not in sources
    if count:
        first = ir.layers[count]
        assert teach & set(first.levels) or first.name in nested or first.name in sources
    assert (count > 0) == (name in SPLIT)
