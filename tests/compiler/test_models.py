"""Every bundled spec, compiled: streaming, causality, batch independence, determinism,
compiled == eager, and a regression anchor (the loss after three AdamW steps on fixed data;
the ablations of specs/ablations/ are checked but not anchored).

The specs are shrunk (width 32, 2 heads, one block repetition) to keep the suite fast; the
anchors in ``anchors.json`` were recorded by ``python tests/compiler/test_models.py``
(rerun it only when a change of the numbers is intended, and say why in the commit).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import nlc  # noqa: E402

SPECS = sorted(p.stem for p in (ROOT / "specs").glob("*.yaml"))  # anchored: the top-level specs
ABLATIONS = sorted(f"ablations/{p.stem}" for p in (ROOT / "specs" / "ablations").glob("*.yaml"))
SMALL = ("model.width=32", "model.heads=2", "model.blocks.0.repeat=1")
ANCHORS = Path(__file__).with_name("anchors.json")


def small_model(name: str, seed: int = 0):
    return nlc.compile(ROOT / "specs" / f"{name}.yaml", overrides=SMALL, seed=seed)


def tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


def anchor_losses(name: str) -> list[float]:
    model = small_model(name)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = tokens(2, 33)
    losses = []
    for _ in range(3):
        logits, _ = model(data[:, :-1], targets=data[:, 1:])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), data[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses



@pytest.mark.parametrize("name", SPECS)
def test_regression_anchor(name):
    expected = json.loads(ANCHORS.read_text())[name]
    assert anchor_losses(name) == pytest.approx(expected, rel=1e-4)


def chunk_grid(model) -> int:
    """The largest memory chunk (16 without memories): the test splits off its grid."""
    return max([getattr(lv, "chunk", 16) for lv in model.ir.levels.values() if lv.type == "memory"] or [16])


@pytest.mark.parametrize("name", SPECS + ABLATIONS)
def test_streaming_equals_whole_and_is_causal(name):
    model = small_model(name)
    grid = chunk_grid(model)
    T = 2 * grid
    x = tokens(2, T)
    y = torch.roll(x, -1, 1)
    whole, _ = model(x, targets=y)
    assert whole.shape == (2, T, 256) and whole.dtype == torch.float32 and whole.isfinite().all()
    state, parts = model.init_state(2), []
    cut = grid // 2 + 3  # mid-chunk (and off every CMS period): the chunk phase is carried
    for a, b in ((0, cut), (cut, T)):
        logits, state = model(x[:, a:b], state, targets=y[:, a:b])
        parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=1e-4, atol=1e-4)
    t = T * 5 // 8
    changed = x.clone()
    changed[:, t:] = (changed[:, t:] + 1) % 256
    y2 = torch.roll(changed, -1, 1)
    y2[:, t - 1] = y[:, t - 1]  # keep every target before t: the teach signal of tokens < t
    after, _ = model(changed, targets=y2)
    torch.testing.assert_close(after[:, :t], whole[:, :t], rtol=0, atol=0)


@pytest.mark.parametrize("name", SPECS + ABLATIONS)
def test_batch_independence_and_determinism(name):
    model = small_model(name)
    x = tokens(3, 32)
    full, _ = model(x, targets=x)
    other = x.clone()
    other[1] = tokens(1, 32, seed=5)[0]
    mixed, _ = model(other, targets=other)
    torch.testing.assert_close(mixed[[0, 2]], full[[0, 2]], rtol=0, atol=0)
    again, _ = small_model(name)(x, targets=x)
    torch.testing.assert_close(again, full, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["hope", "titans_mac", "samba", "cms_independent"])
def test_fullgraph_compile_matches_eager(name):
    torch._dynamo.reset()
    model = small_model(name)
    x = tokens(2, 32)
    eager, _ = model.run(x, model.init_state(2))
    compiled = torch.compile(model.run, backend="eager", fullgraph=True)
    logits, _ = compiled(x, model.init_state(2))
    torch.testing.assert_close(logits, eager, rtol=1e-5, atol=1e-5)


if __name__ == "__main__":  # record the anchors
    torch.set_num_threads(1)
    ANCHORS.write_text(json.dumps({name: anchor_losses(name) for name in SPECS}, indent=1) + "\n")
    print(f"wrote {ANCHORS}")
