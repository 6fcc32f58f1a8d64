"""Every bundled spec stays finite from its initialisation over sequences far longer than
its chunks and periods, on random bytes and on MQAR prompts (key-value structure).

A regression test: without a per-token surprise clip (``update.grad_clip``) the Titans
specs' chunk-64 momentum updates blew up from init -- the memory's weight norm roughly
squared every chunk (12 -> 34 -> 1.7e3 -> 8.8e9) and was NaN by token 256-320 -- found by
``nlc bench paper``, where every Titans MQAR run ended NaN."""
from __future__ import annotations

import pytest
import torch

import nlc
from nlc.evaluate import task_batch
from nlc.spec.load import bundled_models, bundled_specs

T = 512   # 8 chunks of 64; the Titans blow-up below reached NaN by token 256-320
MODEL_SPECS = sorted(bundled_models())


@pytest.mark.parametrize("name", MODEL_SPECS)
def test_bundled_spec_is_finite_over_long_sequences_from_init(name):
    model = nlc.compile(bundled_specs()[name], overrides=["model.width=64"], seed=0)
    inputs = {"random": torch.randint(0, 256, (2, T), generator=torch.Generator().manual_seed(0)),
              "mqar": task_batch("mqar", 2, T, 256, seed=1).tokens}
    for kind, tokens in inputs.items():
        with torch.no_grad():  # no teach targets: task-driven CMS levels stay put (their GD step is not at issue)
            logits, _ = model(tokens, model.init_state(2))
        assert torch.isfinite(logits).all(), f"{name}: non-finite logits on {kind} tokens"
        assert logits.abs().max() < 1e3, f"{name}: logits blow up on {kind} tokens"
