"""Yaad's delta_t, Memora's KL retention and TTT's norm and mean as spec fields: what they
compile to, and every combination the runtime cannot build refused at its YAML line."""
from __future__ import annotations

import pytest
import torch

import nlc
from tests.graph.test_capabilities import TINY, assert_refused, spec_file

MEMORY = """nlc: 1
extends: base/small.yaml
name: t
levels:
  mem:
    type: memory
    memory: {{kind: mlp, depth: 2, expansion: 2{memory}}}
    objective: {objective}
    update: {{rule: gd, lr: {lr}{update}}}
    chunk: 4
    keys: {{from: input, norm: l2}}
    queries: {{from: input, norm: l2}}
  mlp: {{type: mlp}}
model:
  blocks: [{{layers: [mem, mlp]}}]
"""


def _outputs(tmp_path, **fields) -> torch.Tensor:
    text = MEMORY.format(**{"memory": "", "objective": "{kind: l2}", "lr": 0.1, "update": "", **fields})
    model = nlc.compile(spec_file(tmp_path, text), overrides=TINY, seed=0)
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    return model(x)[0]


def test_reduce_mean_is_the_chunk_mean_of_the_gradients(tmp_path):
    """TTT's mini-batch GD: with chunk 4, lr 0.16 on the mean equals lr 0.04 on the sum, token for
    token, and differs from lr 0.16 on the sum."""
    mean = _outputs(tmp_path, lr=0.16, update=", reduce: mean")
    torch.testing.assert_close(mean, _outputs(tmp_path, lr=0.04), rtol=0, atol=0)
    assert (mean - _outputs(tmp_path, lr=0.16)).abs().max() > 1e-4


@pytest.mark.parametrize("objective,update,memory", [
    ("{kind: huber, delta: {from: input, init: 0.5, max: 2.0}}", "", ""),
    ("{kind: huber, delta: {learned: 0.5}}", "", ""),
    ("{kind: l2}", ", retention: {from: input, init: 0.99}, retention_kind: kl, mass: 4.0", ""),
    ("{kind: l2}", ", reduce: mean", ", residual: true, norm: layernorm"),
])
def test_their_parameters_learn(tmp_path, objective, update, memory):
    """One outer step: the loss is finite and the new slow parameters (delta's read-out, the
    LayerNorm's gain and bias, the kl memory's initial logits) get non-zero gradients."""
    text = MEMORY.format(memory=memory, objective=objective, lr=0.1, update=update)
    model = nlc.compile(spec_file(tmp_path, text), overrides=TINY, seed=0)
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    logits, _ = model(x)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), x.roll(-1, 1).flatten()).backward()
    named = dict(model.named_parameters())
    new = [n for n in named if any(s in n for s in ("delta", "norm.", "state0"))]
    assert new, list(named)
    for n in new:
        assert named[n].grad is not None and torch.isfinite(named[n].grad).all(), n
        assert named[n].grad.abs().max() > 0, n


@pytest.mark.parametrize("memory,objective,update,path,fragment", [
    ("{kind: matrix}", "{kind: l2}", "{rule: delta, lr: 0.1, reduce: mean}", "update.reduce",
     "exact at every token"),
    ("{kind: mlp}", "{kind: l2}", "{rule: gd, lr: 0.1, retention_kind: kl}", "update.mass", "needs 'mass'"),
    ("{kind: mlp}", "{kind: huber, delta: {from: mlp, init: 1.0, max: 2.0}}", "{rule: gd, lr: 0.1}",
     "objective.delta", "comes from the level input"),
    ("{kind: mlp}", "{kind: huber, window: 2, delta: {from: input, init: 1.0, max: 2.0}}", "{rule: gd, lr: 0.1}",
     "objective.delta", "Omega window"),
])
def test_refused_at_their_line(tmp_path, memory, objective, update, path, fragment):
    field = path.split(".")[0]
    lines = {"memory": f"    memory: {memory}", "objective": f"    objective: {objective}",
             "update": f"    update: {update}"}
    lines[field] += "  # <-"
    text = "\n".join(["nlc: 1", "extends: base/small.yaml", "levels:", "  mem:", "    type: memory", *lines.values(),
                      "    chunk: 4", "    keys: {from: input, norm: l2}", "  mlp: {type: mlp}",
                      "model:", "  blocks: [{layers: [mem, mlp]}]"]) + "\n"
    assert_refused(tmp_path, text, f"levels.mem.{path}", fragment)


def test_cms_and_hope_refuse_them(tmp_path):
    cms = """nlc: 1
extends: cms
levels:
  cms_fast:
    type: mlp
    update: {rule: gd, lr: 1.0e-3, reduce: mean}  # <-
"""
    assert_refused(tmp_path, cms, "levels.cms_fast.update.reduce", "takes no reduce")
    hope = """nlc: 1
extends: hope
levels:
  mem_k:
    type: memory
    memory: {kind: mlp, depth: 2, expansion: 2, residual: true, norm: layernorm}  # <-
"""
    assert_refused(tmp_path, hope, "levels.mem_k.memory.norm", "without an output norm")
