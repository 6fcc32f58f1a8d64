"""Deployment protocol and dynamic evaluation (nlc.continual.deployment / dynamic_eval) on tiny
models: frozen parameters, causal scores, fresh vs carried, lr = 0, and ``nlc deploy``."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import nlc
from nlc.cli.app import app
from nlc.continual import TokenSplits
from nlc.continual.deployment import DeploymentError, deploy, score_stream
from nlc.continual.dynamic_eval import DynamicEval, cms_levels, cms_step, dynamic_parameters
from nlc.continual.metrics import ContinualError
from nlc.data import get_tokenizer
from nlc.errors import NonFiniteError

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.width=16", "model.heads=2", "model.blocks.0.repeat=1"]
# attention + one CMS level that learns from the task loss and lives for the stream
CMS_STREAM = """
nlc: 1
name: tiny_cms_stream
levels:
  attn: {type: attention}
  cms: {type: mlp, period: 8, objective: {kind: task}, update: {rule: gd, lr: 0.5}, lifetime: stream}
  outer: {type: optimizer, rule: adamw, lr: 1.0e-3}
model: {width: 16, heads: 2, blocks: [{repeat: 1, layers: [attn, cms]}]}
train: {data: shakespeare, steps: 1, batch: 2, seq_len: 32, seed: 0}
"""


@pytest.fixture(scope="module")
def transformer():
    return nlc.compile("transformer", overrides=TINY, seed=0).eval()


@pytest.fixture(scope="module")
def cms_stream():
    return nlc.compile(CMS_STREAM, seed=0).eval()


def text(size: int, seed: int = 0) -> torch.Tensor:
    """A repetitive byte stream (a few words in random order): something to learn quickly."""
    words = [b"alpha ", b"beta ", b"gamma ", b"delta "]
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(words), (size,), generator=g).tolist()
    return torch.tensor(list(b"".join(words[i] for i in picks)[:size]), dtype=torch.long)


def windows(tokens: torch.Tensor, rows: int, length: int):
    x = torch.stack([tokens[i * (length + 1):i * (length + 1) + length] for i in range(rows)])
    y = torch.stack([tokens[i * (length + 1) + 1:(i + 1) * (length + 1)] for i in range(rows)])
    return x, y


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def unchanged(model, before) -> bool:
    return all(torch.equal(before[name], p) for name, p in model.named_parameters())


def test_outer_parameters_bitwise_unchanged(cms_stream, transformer):
    for model, levels in ((cms_stream, ("attn",)), (transformer, None)):
        before = snapshot(model)
        result = deploy(model, text(400), text(400, seed=1), tokens=64, segment=16, streams=2,
                        pretrain_tokens=32, dynamic=DynamicEval(8, 0.05, levels), carry="all")
        assert set(result.conditions) == {"fresh", "carried", "dynamic_fresh", "dynamic_carried"}
        assert unchanged(model, before)
        assert model.training is False


@settings(max_examples=6)
@given(cut=st.integers(1, 46), seed=st.integers(0, 1000))
def test_scores_are_causal(cms_stream, transformer, cut, seed):
    """Replacing the tokens after index ``cut`` of the text leaves the scores of every position
    whose target comes before it bitwise equal: no token is scored by a level that saw it."""
    tokens = text(2 * 49)
    changed = tokens.clone()
    g = torch.Generator().manual_seed(seed)
    changed[cut + 1:] = torch.randint(0, 256, (changed.numel() - cut - 1,), generator=g)
    runs = [(cms_stream, dict(carried=c, carry=k)) for c in (False, True) for k in ("lifetimes", "all")]
    runs += [(transformer, dict(carried=c, dynamic=DynamicEval(4, 0.5))) for c in (False, True)]
    for model, kwargs in runs:
        rows = 1 if "dynamic" in kwargs else 2
        a, _ = score_stream(model, *windows(tokens, rows, 48), 16, **kwargs)
        b, _ = score_stream(model, *windows(changed, rows, 48), 16, **kwargs)
        assert torch.equal(a[0, :cut], b[0, :cut]), kwargs
        assert not torch.equal(a[0], b[0])  # the change reached the later scores


def test_no_learning_and_no_context_means_fresh_equals_carried(transformer):
    """The Transformer has no level that outlives a sequence (attention's cache is per
    sequence, its MLP is frozen): carrying its state between segments changes nothing."""
    assert transformer.carried_layers == ()
    result = deploy(transformer, text(300), tokens=96, segment=32, streams=2)
    assert result.conditions["fresh"] == result.conditions["carried"]


def test_a_stream_cms_level_learns_across_segments(cms_stream):
    result = deploy(cms_stream, text(600), text(600, seed=1), tokens=192, segment=32, streams=2)
    fresh, carried = result.conditions["fresh"], result.conditions["carried"]
    assert fresh["bpb"][0] == carried["bpb"][0]  # the first segment starts from the same state
    assert carried["bpb_last_quarter"] < fresh["bpb_last_quarter"] - 0.05  # it learned the words (0.12 bpb)
    assert len(carried["tokens"]) == 6 and carried["tokens"][-1] == 192
    assert carried["cumulative"][-1] == pytest.approx(carried["bpb_all"])
    old = result.pretrain
    assert old["forgetting"]["carried"] == pytest.approx(old["after"]["carried"] - old["before"]["carried"])
    assert old["after"]["carried"] != old["before"]["carried"]


def test_the_carried_state_holds_no_autograd_graph(cms_stream):
    """The teach segments run with gradients on; a carried state that kept their graph would
    grow with every segment (memory and time without bound on a long stream)."""
    def tensors(state):
        for value in state.values():
            yield from tensors(value) if isinstance(value, dict) else [value] if torch.is_tensor(value) else []

    x, y = windows(text(100), 2, 48)
    for carry in ("lifetimes", "all"):
        _, end = score_stream(cms_stream, x, y, 16, carried=True, carry=carry)
        found = list(tensors(end.state))
        assert found and all(t.grad_fn is None and not t.requires_grad for t in found)


def test_dynamic_eval_lr_zero_is_plain_scoring(transformer):
    """Bitwise where both make the same calls (a segment of one period); within a longer
    segment dynamic evaluation calls the model once per chunk, and the model streams
    exactly up to float rounding (matmuls of other shapes: 5e-7 nats measured here)."""
    x, y = windows(text(200), 1, 64)
    for carried in (False, True):
        for carry in ("lifetimes", "all"):
            plain, _ = score_stream(transformer, x, y, 8, carried=carried, carry=carry)
            frozen, end = score_stream(transformer, x, y, 8, carried=carried, carry=carry,
                                       dynamic=DynamicEval(8, 0.0))
            assert torch.equal(plain, frozen)
        plain, _ = score_stream(transformer, x, y, 32, carried=carried)
        frozen, _ = score_stream(transformer, x, y, 32, carried=carried, dynamic=DynamicEval(8, 0.0))
        torch.testing.assert_close(plain, frozen, rtol=0, atol=1e-5)
    chosen = dynamic_parameters(transformer)
    assert all(torch.equal(end.weights[name], p) for name, p in chosen.items())


def test_dynamic_eval_changes_only_the_chosen_weights(transformer):
    before = snapshot(transformer)
    x, y = windows(text(200), 1, 64)
    plain, _ = score_stream(transformer, x, y, 32, carried=True)
    learned, end = score_stream(transformer, x, y, 32, carried=True, dynamic=DynamicEval(8, 0.5))
    chosen = dynamic_parameters(transformer)
    assert sorted(end.weights) == sorted(chosen) and len(chosen) == 2  # gate_up and down of the one MLP
    assert all(name.endswith(("gate_up.weight", "down.weight")) for name in chosen)
    assert all(not torch.equal(end.weights[name], p) for name, p in chosen.items())
    assert torch.equal(learned[:, :8], plain[:, :8]) and not torch.equal(learned, plain)
    assert unchanged(transformer, before)


def test_a_diverged_condition_is_recorded_without_losing_the_others(transformer):
    """Dynamic evaluation with an absurd step size blows up; the plain conditions stay finite
    and, with ``check_finite=False`` (the paper benchmark), are kept beside it."""
    blow_up = DynamicEval(16, 1e38)
    with pytest.raises(NonFiniteError, match="dynamic_fresh"):
        deploy(transformer, text(300), text(300, seed=1), tokens=64, segment=32, dynamic=blow_up)
    kept = deploy(transformer, text(300), text(300, seed=1), tokens=64, segment=32, dynamic=blow_up,
                  check_finite=False)
    plain = deploy(transformer, text(300), text(300, seed=1), tokens=64, segment=32)
    assert kept.conditions["carried"] == plain.conditions["carried"]
    assert not math.isfinite(kept.conditions["dynamic_fresh"]["bpb_all"])
    assert kept.pretrain["forgetting"]["carried"] == plain.pretrain["forgetting"]["carried"]


def test_cms_step_reads_the_cms_levels():
    assert cms_step("hope") == (16, 1.0e-3)
    assert [(lv.name, lv.period) for lv in cms_levels("hope_continual")] == [
        ("cms_fast", 16), ("cms_mid", 64), ("cms_slow", 512)]
    with pytest.raises(ContinualError, match="no CMS level"):
        cms_step("transformer")


@pytest.mark.parametrize("kwargs,argument", [
    (dict(tokens=50, segment=16), "tokens"),
    (dict(tokens=64, segment=0), "segment"),
    (dict(tokens=64, segment=16, streams=40), "tokens"),
    (dict(tokens=64, segment=16, carry="everything"), "carry"),
    (dict(tokens=64, segment=16, dynamic=DynamicEval(5, 0.1)), "dynamic_period"),
    (dict(tokens=64, segment=16, dynamic=DynamicEval(8, 0.1, ("attn_typo",))), "dynamic_levels"),
    (dict(tokens=64, segment=16, dynamic=DynamicEval(8, 0.1), model="cms_stream"), "dynamic_levels"),
])
def test_bad_arguments_name_themselves(transformer, cms_stream, kwargs, argument):
    kwargs = dict(kwargs)
    model = cms_stream if kwargs.pop("model", None) else transformer  # cms_stream: no frozen mlp level
    with pytest.raises(DeploymentError, match=argument.split("_")[0]) as err:
        deploy(model, text(300), **kwargs)
    assert err.value.argument == argument and err.value.exit_status == 2
    with pytest.raises(DeploymentError, match="lr"):
        DynamicEval(8, -1.0)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    prose = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")[:3000]
    data = TokenSplits.from_text("design", prose[:2500], prose[2500:], get_tokenizer("bytes"))
    out = tmp_path_factory.mktemp("run")
    nlc.train("transformer", data=data, out=out, steps=2, progress=False,
              overrides=[*TINY, "train.batch=2", "train.seq_len=16", "train.eval_batches=1"])
    (out / "unseen.txt").write_text((ROOT / "specs" / "hope.yaml").read_text(encoding="utf-8")[:2000])
    (out / "old.txt").write_text(prose[2500:])
    return out


def test_cli_writes_the_curves(run_folder, tmp_path):
    target = tmp_path / "deploy.json"
    result = CliRunner().invoke(app, ["deploy", str(run_folder), "--domain", str(run_folder / "unseen.txt"),
                                      "--pretrain-domain", str(run_folder / "old.txt"), "--tokens", "64",
                                      "--streams", "2", "--pretrain-tokens", "32", "--dynamic-eval",
                                      "--dynamic-from", "hope", "--out", str(target)])
    assert result.exit_code == 0, result.output
    assert "dynamic_carried" in result.stdout and "forgetting" in result.stdout
    saved = json.loads(target.read_text())
    assert saved["segment"] == 16 and saved["tokens"] == 64 and saved["dynamic"]["period"] == 16
    assert saved["dynamic"]["lr"] == 1.0e-3 and saved["domain"] == "unseen.txt"
    chosen = dynamic_parameters(nlc.load(run_folder))
    assert saved["dynamic"]["parameters"] == sum(p.numel() for p in chosen.values()) > 0
    for curve in saved["conditions"].values():
        assert curve["tokens"] == [16, 32, 48, 64]
        assert all(0 < v < 20 and math.isfinite(v) for v in [*curve["bpb"], *curve["cumulative"]])
    assert set(saved["pretrain"]["forgetting"]) == {"carried", "dynamic_carried"}
    assert saved["pretrain"]["forgetting"]["carried"] == 0.0  # nothing outlives a sequence


@pytest.mark.parametrize("args,option", [
    (["--tokens", "50"], "--tokens"),
    (["--carry", "everything"], "--carry"),
    (["--dynamic-lr", "0.1"], "--dynamic-lr"),
    (["--dynamic-eval"], "--dynamic-lr"),  # a Transformer has no CMS level to take them from
    (["--dynamic-eval", "--dynamic-lr", "0.1", "--dynamic-period", "5"], "--dynamic-period"),
    (["--domain", "/nonexistent.txt"], "--domain"),
])
def test_cli_bad_arguments_exit_2(run_folder, args, option):
    old = ["--pretrain-domain", str(run_folder / "old.txt")]
    domain = [] if "--domain" in args else ["--domain", str(run_folder / "unseen.txt")]
    result = CliRunner().invoke(app, ["deploy", str(run_folder), "--tokens", "64", *domain, *old, *args])
    assert result.exit_code == 2, result.output
    assert option in result.output and "Traceback" not in result.output
