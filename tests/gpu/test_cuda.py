"""On a GPU: every bundled spec computes on CUDA what it computes on the CPU.

Skipped where CUDA is not available (CI has no GPU). ``NLC_GPU_TEST_DEVICE=cpu`` runs the
same checks with the CPU as the "device" (a dry run of the code paths only).

Checks, each against the CPU run of the same weights and tokens in float32 (TF32 off):
logits and parameter gradients of every bundled spec; streaming == whole on the device;
``torch.compile`` == eager on the device; ``nlc.train`` on the device learns, and its
checkpoint reloads to the same logits. Tolerances are relative to the reference's scale.

Notation: B batch, T tokens, V vocabulary (256).
"""
from __future__ import annotations

import os

import pytest
import torch

import nlc
from nlc.spec.load import bundled_models, bundled_specs

DEVICE = os.environ.get("NLC_GPU_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")
B, T, V = 2, 192, 256
SMALL = ["model.width=64"]
RTOL = 2e-3   # max |device - cpu| / max |cpu|: float32 reductions in another order, amplified
              # through in-context updates over T tokens


@pytest.fixture(autouse=True)
def exact_float32():
    if torch.cuda.is_available():
        before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        yield
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    else:
        yield


def _tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.detach().cpu().double() - want.detach().double()).abs().max()
                 / want.detach().double().abs().max().clamp_min(1e-12))


def _pair(name: str, overrides=SMALL):
    cpu = nlc.compile(bundled_specs()[name], overrides=overrides, seed=0)
    dev = nlc.compile(bundled_specs()[name], overrides=overrides, seed=0, device=DEVICE)
    dev.load_state_dict(cpu.state_dict())
    return cpu, dev


def _loss_and_grads(model, tokens):
    device = next(model.parameters()).device
    x = tokens.to(device)
    targets = torch.roll(x, -1, 1)
    logits, _ = model(x, model.init_state(B), targets)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
    return logits, loss, grads


MODEL_SPECS = sorted(bundled_models())


@pytest.mark.parametrize("name", MODEL_SPECS)
def test_bundled_spec_on_the_device_matches_the_cpu(name):
    cpu, dev = _pair(name)
    tokens = _tokens()
    want_logits, want_loss, want_grads = _loss_and_grads(cpu, tokens)
    got_logits, got_loss, got_grads = _loss_and_grads(dev, tokens)
    assert next(dev.parameters()).device.type == torch.device(DEVICE).type
    assert _relative(got_logits, want_logits) < RTOL, name
    assert abs(float(got_loss.detach()) - float(want_loss.detach())) < RTOL * float(want_loss.detach()), name
    for (pname, _), got, want in zip([(n, p) for n, p in cpu.named_parameters() if p.requires_grad],
                                     got_grads, want_grads):
        assert (got is None) == (want is None), pname
        if want is not None and want.abs().max() > 0:
            assert _relative(got, want) < 10 * RTOL, (name, pname, _relative(got, want))


@pytest.mark.parametrize("name", ["hope", "titans_lmm", "titans_mac", "samba", "cms"])
def test_streaming_equals_whole_on_the_device(name):
    _, dev = _pair(name)
    x = _tokens(1).to(DEVICE)
    targets = torch.roll(x, -1, 1)
    with torch.no_grad():
        whole, _ = dev(x, dev.init_state(B), targets)
        cut = 128  # a multiple of every period and teach period of the bundled specs
        first, state = dev(x[:, :cut], dev.init_state(B), targets[:, :cut])
        second, _ = dev(x[:, cut:], state, targets[:, cut:])
    assert _relative(torch.cat([first, second], 1), whole.cpu()) < RTOL


@pytest.mark.parametrize("name", ["transformer", "titans_lmm"])
def test_torch_compile_equals_eager_on_the_device(name):
    _, dev = _pair(name)
    compiled = nlc.compile(bundled_specs()[name], overrides=SMALL, seed=0, device=DEVICE, compile="default")
    compiled.load_state_dict(dev.state_dict())
    x = _tokens(2).to(DEVICE)
    targets = torch.roll(x, -1, 1)
    with torch.no_grad():
        eager, _ = dev(x, dev.init_state(B), targets)
        fast, _ = compiled(x, compiled.init_state(B), targets)
    assert _relative(fast, eager.cpu()) < RTOL


def test_training_on_the_device_learns_and_its_checkpoint_reloads(tmp_path):
    from nlc.training import load_checkpoint, train

    result = train(bundled_specs()["hope"], out=tmp_path / "run", steps=60, progress=False, device=DEVICE,
                   overrides=[*SMALL, "train.batch=8", "train.seq_len=128", "train.eval_every=20",
                              "train.eval_batches=2", "levels.outer.lr=0.004"])
    assert next(result.model.parameters()).device.type == torch.device(DEVICE).type
    assert result.val_bpb < 7.0  # untrained: 8 bits per byte
    model, _ = load_checkpoint(tmp_path / "run" / "checkpoint", device=DEVICE)
    x = _tokens(3).to(DEVICE)
    targets = torch.roll(x, -1, 1)
    with torch.no_grad():
        want, _ = result.model(x, result.model.init_state(B), targets)
        got, _ = model(x, model.init_state(B), targets)
    assert torch.equal(got, want)
