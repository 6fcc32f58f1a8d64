"""Layer names are distinct within a block repetition (``nlc.ir.resolve._layer_names``).

A layer's name is its state key and its attribute in the emitted model. Names join the
layer's first two level names, so ``parallel: [a, b_c]`` and ``parallel: [a_b, c]`` both gave
``b0_r0_a_b_c``: the second layer replaced the first (its levels lost their parameters and
the second ran twice) and the two shared one state entry. Such layers get their index.
"""
from __future__ import annotations

import torch

import nlc

COLLIDING = """\
nlc: 1
levels:
  a: {type: memory, update: {rule: gd, lr: 0.1}}
  b_c: {type: mlp}
  a_b: {type: mlp}
  c: {type: memory, update: {rule: gd, lr: 0.1}}
  outer: {type: optimizer}
model:
  width: 16
  heads: 2
  blocks:
  - layers:
    - parallel: [a, b_c]
    - parallel: [a_b, c]
train: {seq_len: 32}
"""


def test_layers_whose_level_names_join_alike_get_distinct_names_and_states():
    model = nlc.compile(COLLIDING, seed=0)
    names = ("b0_r0_l0_a_b_c", "b0_r0_l1_a_b_c")
    assert tuple(layer.name for layer in model.ir.layers) == names
    assert model.LAYERS == names
    assert set(model.init_state(2)) == {"pos", *names}
    assert [layer.levels for layer in model.ir.layers] == [("a", "b_c"), ("a_b", "c")]


def test_each_colliding_layer_has_its_own_parameters_and_is_applied():
    model = nlc.compile(COLLIDING, seed=0)
    counts = model.parameter_counts()
    assert all(counts.get(level, 0) > 0 for level in ("a", "b_c", "a_b", "c")), counts
    first, second = (getattr(model, name) for name in model.LAYERS)
    assert not {id(p) for p in first.parameters()} & {id(p) for p in second.parameters()}

    x = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before, state = model(x)
        assert set(state) == {"pos", *model.LAYERS}
        for p in first.parameters():  # the first layer's own weights change its output
            p.add_(0.5)
        after, _ = model(x)
    assert not torch.allclose(before, after)


def test_a_short_name_meeting_an_indexed_one_is_indexed_too():
    """``a`` is used twice, so its layers are indexed (``b0_r0_l1_a``); a level named ``l1_a``
    in a layer of its own would be ``b0_r0_l1_a`` as well."""
    text = COLLIDING.replace("""\
    - parallel: [a, b_c]
    - parallel: [a_b, c]
""", """\
    - a
    - a
    - l1_a
    - parallel: [b_c, a_b, c]
""").replace("  outer:", "  l1_a: {type: mlp}\n  outer:")
    model = nlc.compile(text, seed=0)
    assert [layer.name for layer in model.ir.layers] == [
        "b0_r0_l0_a", "b0_r0_l1_a", "b0_r0_l2_l1_a", "b0_r0_b_c_a_b"]
