"""Optimizer levels as memories of the gradient stream (issue 14; nlc.spec.optimizers).

Each preset is run through its written-out form (:func:`nlc.spec.presets.expand` into
:class:`nlc.optim.GradientMemories`) on random parameters and gradient streams and checked
against an independent implementation:

* the dot-objective momentum memory == ``torch.optim.SGD(momentum=β)`` (nesterov, L2 decay);
* the adam / adamw presets == ``torch.optim.Adam`` / ``AdamW``;
* muon == a Newton-Schulz Muon step written here (and torch's bf16 ``torch.optim.Muon`` to
  bf16 precision);
* m3 with the slow branch off == the single-scale rule written here; its slow memory
  writes every f updates, on the mean gradient since, and holds in between;
* the l2 objective (delta momentum) == its equation, written here;
* training: muon, m3 and a hand-written momentum-as-memory level train and resume exactly.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nlc
from nlc.ir.resolve import _gradient_rule
from nlc.optim import GradientMemories
from nlc.graph.validate import validate
from nlc.spec.optimizers import OptimizerLevel
from nlc.spec.presets import expand

SHAPES = [(6, 4), (3, 7), (5,)]


def level(**fields) -> OptimizerLevel:
    return OptimizerLevel(type="optimizer", **fields)


def memories(spec: OptimizerLevel, params: list[torch.Tensor], matrices: bool = True) -> GradientMemories:
    written = expand(spec)
    rule = _gradient_rule(written.matrices if matrices else written.others)
    return GradientMemories([{"params": params, "rule": rule, "weight_decay": spec.weight_decay}], lr=spec.lr,
                            eps=spec.eps)


def stream(seed: int, steps: int, shapes=SHAPES) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g) for s in shapes]
    grads = [[torch.randn(s, generator=g) * 10 ** float(torch.randint(-3, 1, (), generator=g)) for s in shapes]
             for _ in range(steps)]
    return params, grads


def run(optimizer_of, params: list[torch.Tensor], grads: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    ps = [p.clone().requires_grad_(True) for p in params]
    optimizer = optimizer_of(ps)
    for step in grads:
        for p, g in zip(ps, step):
            p.grad = g.clone()
        optimizer.step()
    return [p.detach() for p in ps]


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor], rtol=1e-5, atol=1e-6) -> None:
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


@settings(max_examples=25, deadline=None)
@given(st.floats(0.0, 0.99), st.booleans(), st.floats(0.0, 0.1), st.floats(1e-4, 0.5), st.integers(0, 2**16))
def test_the_dot_momentum_memory_is_torch_sgd(beta, nesterov, decay, lr, seed):
    nesterov = nesterov and beta > 0
    spec = level(rule="sgd", momentum=beta, nesterov=nesterov, weight_decay=decay, lr=lr)
    params, grads = stream(seed, 7)
    ours = run(lambda ps: memories(spec, ps), params, grads)
    torch_sgd = run(lambda ps: torch.optim.SGD(ps, lr=lr, momentum=beta, nesterov=nesterov, weight_decay=decay),
                    params, grads)
    assert_same(ours, torch_sgd)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["adam", "adamw"]), st.floats(0.0, 0.99), st.floats(0.5, 0.9999), st.floats(0.0, 0.2),
       st.sampled_from([1e-8, 1e-6, 1e-3]), st.integers(0, 2**16))
def test_the_adam_presets_are_torch_adam(rule, beta1, beta2, decay, eps, seed):
    spec = level(rule=rule, betas=(beta1, beta2), weight_decay=decay, eps=eps, lr=1e-2)
    params, grads = stream(seed, 9)
    ours = run(lambda ps: memories(spec, ps), params, grads)
    reference = torch.optim.AdamW if rule == "adamw" else torch.optim.Adam
    theirs = run(lambda ps: reference(ps, lr=1e-2, betas=(beta1, beta2), eps=eps, weight_decay=decay), params, grads)
    assert_same(ours, theirs)


def reference_newton_schulz(g: torch.Tensor, steps: int) -> torch.Tensor:
    """Muon's quintic iteration (Jordan et al. 2024), in float32."""
    x = g.T if g.shape[0] > g.shape[1] else g
    x = x / x.norm().clamp_min(1e-7)
    for _ in range(steps):
        a = x @ x.T
        x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
    return x.T if g.shape[0] > g.shape[1] else x


def reference_muon(params, grads, lr, mu, decay, nesterov=True, steps=5):
    """Muon with AdamW-matched update RMS (Liu et al. 2025): buf <- μ buf + (1-μ) g."""
    ps, bufs = [p.clone() for p in params], [torch.zeros_like(p) for p in params]
    for step in grads:
        for p, buf, g in zip(ps, bufs, step):
            buf.mul_(mu).add_(g, alpha=1 - mu)
            update = (1 - mu) * g + mu * buf if nesterov else buf
            o = reference_newton_schulz(update, steps) * 0.2 * max(p.shape) ** 0.5
            p.mul_(1 - lr * decay).sub_(lr * o)
    return ps


@settings(max_examples=15, deadline=None)
@given(st.floats(0.5, 0.99), st.booleans(), st.floats(0.0, 0.1), st.sampled_from([1, 3, 5]), st.integers(0, 2**16))
def test_muon_is_newton_schulz_on_the_momentum(mu, nesterov, decay, steps, seed):
    spec = level(rule="muon", momentum=mu, nesterov=nesterov, weight_decay=decay, ns_steps=steps, lr=0.02)
    params, grads = stream(seed, 6, SHAPES[:2])
    ours = run(lambda ps: memories(spec, ps), params, grads)
    assert_same(ours, reference_muon(params, grads, 0.02, round(mu, 12), decay, nesterov, steps), rtol=1e-4,
                atol=1e-5)


def test_muon_matches_torchs_bfloat16_muon_to_its_precision():
    spec = level(rule="muon", weight_decay=0.05, lr=0.02)
    params, grads = stream(3, 5, [(16, 8), (8, 24)])
    ours = run(lambda ps: memories(spec, ps), params, grads)
    theirs = run(lambda ps: torch.optim.Muon(ps, lr=0.02, weight_decay=0.05, adjust_lr_fn="match_rms_adamw"),
                 params, grads)
    moved = [(a - p).norm() for a, p in zip(ours, params)]
    for a, b, m in zip(ours, theirs, moved):
        assert float((a - b).norm()) < 0.05 * float(m)  # bf16 Newton-Schulz: about 1% apart


def reference_m3_fast(params, grads, lr, beta1, beta2, eps, steps=5):
    """M3 without its slow branch: NS(m1) / (sqrt(v̂) + ε), m1 and v as EMAs."""
    ps = [p.clone() for p in params]
    m, v = [torch.zeros_like(p) for p in ps], [torch.zeros_like(p) for p in ps]
    for n, step in enumerate(grads, 1):
        for p, m1, v1, g in zip(ps, m, v, step):
            m1.mul_(beta1).add_(g, alpha=1 - beta1)
            v1.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            d = reference_newton_schulz(m1, steps) / ((v1 / (1 - beta2 ** n)).sqrt() + eps)
            p.mul_(1 - lr * 0.1).sub_(lr * d)
    return ps


def test_m3_without_its_slow_branch_is_the_single_scale_rule():
    params, grads = stream(5, 6, SHAPES[:2])
    spec = level(rule="m3", slow_weight=0.0, betas=(0.9, 0.95), lr=1e-3)
    ours = run(lambda ps: memories(spec, ps), params, grads)
    assert_same(ours, reference_m3_fast(params, grads, 1e-3, 0.9, 0.95, 1e-8), rtol=1e-4, atol=1e-5)
    # f = 1 and the slow memory a copy of the fast one: (1 + α) times the same direction
    doubled = run(lambda ps: memories(level(rule="m3", slow_period=1, slow_beta=0.9, slow_weight=1.0,
                                            betas=(0.9, 0.95), lr=0.5e-3, weight_decay=0.2), ps), params, grads)
    assert_same(doubled, ours, rtol=1e-4, atol=1e-5)


def test_a_slow_memory_writes_every_f_updates_on_the_mean_gradient_and_holds_between():
    spec = level(rule="memories", lr=0.1, weight_decay=0.0,
                 matrices={"momenta": [{"retention": 0.5, "lr": 1.0, "period": 3}]})
    p = torch.zeros(2, 2, requires_grad=True)
    optimizer = memories(spec, [p])
    grads = [torch.full((2, 2), float(k)) for k in (1, 2, 3, 4, 5, 6)]
    memory = []
    for g in grads:
        p.grad = g
        optimizer.step()
        memory.append(float(optimizer.state[p]["m0"][0, 0]))
    assert memory == [0.0, 0.0, 2.0, 2.0, 2.0, 0.5 * 2.0 + 5.0]  # means 2 (1,2,3) and 5 (4,5,6)
    assert float(p.detach()[0, 0]) == pytest.approx(-0.1 * (0 + 0 + 2.0 * 3 + 6.0))  # the outputs, summed


@settings(max_examples=15, deadline=None)
@given(st.floats(0.5, 1.0), st.floats(0.05, 1.0), st.integers(0, 2**16))
def test_the_l2_objective_is_delta_momentum(alpha, eta, seed):
    spec = level(rule="memories", lr=0.01, weight_decay=0.0,
                 matrices={"momenta": [{"objective": "l2", "retention": alpha, "lr": eta}]})
    params, grads = stream(seed, 5, [(4, 3), (3, 4)])  # tall and wide: the product runs in either order
    ours = run(lambda ps: memories(spec, ps), params, grads)
    for i, shape in enumerate([(4, 3), (3, 4)]):
        m, p = torch.zeros(shape), params[i].clone()
        for g in (step[i] for step in grads):
            k = g / g.norm()
            m = m @ (alpha * torch.eye(shape[1]) - eta * k.T @ k) + eta * g  # NL-NeurIPS Eq. 22, a unit-norm key
            p = p - 0.01 * m
        torch.testing.assert_close(ours[i], p, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- specs and training
MOMENTUM_AS_MEMORY = """nlc: 1
levels:
  attn: {type: attention}
  mlp: {type: mlp}
  opt:
    type: optimizer
    schedule: constant
    rule: memories
    lr: 0.01
    matrices: {momenta: [{objective: dot, retention: 0.9, lr: 1.0}], decay: l2}
model: {width: 32, heads: 2, blocks: [{layers: [attn, mlp]}]}
train: {seq_len: 16, batch: 2}
"""


@pytest.mark.parametrize("rule", ["muon", "m3", "dmgd", "memories", "sgd"])
def test_optimizer_levels_train_and_resume_exactly(tmp_path, rule):
    text = MOMENTUM_AS_MEMORY if rule == "memories" else MOMENTUM_AS_MEMORY.replace(
        "rule: memories\n    lr: 0.01\n    matrices: {momenta: [{objective: dot, retention: 0.9, lr: 1.0}], decay: l2}",
        f"rule: {rule}\n    lr: 0.01" + ("\n    momentum: 0.9\n    nesterov: true" if rule == "sgd" else "")
        + ("\n    slow_period: 2" if rule == "m3" else ""))
    data = {"name": "random", "vocab": 64}
    g = torch.Generator().manual_seed(0)
    from types import SimpleNamespace

    data = SimpleNamespace(**data, train=torch.randint(0, 64, (3000,), generator=g),
                           val=torch.randint(0, 64, (500,), generator=g))
    whole = nlc.train(text, data, out=tmp_path / "a", steps=6, progress=False)
    nlc.train(text, data, out=tmp_path / "b", steps=3, progress=False)
    resumed = nlc.train(text, data, out=tmp_path / "b", steps=6, resume=True, progress=False)
    a, b = dict(whole.model.named_parameters()), dict(resumed.model.named_parameters())
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [r["loss"] for r in whole.metrics if r["kind"] == "train"]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


@pytest.mark.parametrize("fields, path, fragment", [
    ("rule: adamw, momentum: 0.9", "levels.opt.momentum", "rule 'adamw' does not read 'momentum'"),
    ("rule: sgd, betas: [0.9, 0.99]", "levels.opt.betas", "rule 'sgd' does not read 'betas'"),
    ("rule: memories", "levels.opt.matrices", "spells out the gradient memories"),
    ("rule: muon, slow_period: 4", "levels.opt.slow_period", "rules that do: m3"),
])
def test_fields_a_rule_does_not_read_are_refused_at_their_line(fields, path, fragment):
    text = f"nlc: 1\nlevels:\n  mlp: {{type: mlp}}\n  opt: {{type: optimizer, {fields}}}\n" \
           "model: {width: 16, blocks: [{layers: [mlp]}]}\n"
    spec, issues = validate(text)
    errors = [i for i in issues if i.severity == "error"]
    assert spec is None and errors[0].path == path and fragment in errors[0].message and errors[0].line == 4


def test_nlc_show_expand_writes_presets_out(tmp_path):
    from typer.testing import CliRunner

    from nlc.cli.app import app
    from nlc.graph.validate import load_spec

    spec = tmp_path / "s.yaml"
    spec.write_text(MOMENTUM_AS_MEMORY.replace("rule: memories", "rule: m3").replace(
        "\n    matrices: {momenta: [{objective: dot, retention: 0.9, lr: 1.0}], decay: l2}", ""))
    result = CliRunner().invoke(app, ["show", str(spec), "--expand"])
    assert result.exit_code == 0, result.output
    shown = load_spec(result.output)  # the expansion is itself a valid spec
    opt = shown.levels["opt"]
    assert opt.rule == "memories" and [m.period for m in opt.matrices.momenta] == [1, 8]
    assert {m.output for m in opt.matrices.momenta} == {"newton_schulz"} and opt.others.momenta[0].bias_correction


def test_deep_momentum_reads_past_gradients_weighted_by_their_keys():
    """DMGD (memory: mlp, dot objective): after one write of the rows u_r the read at the
    same gradient is η Σ_r u_r <h_r, h_s> for row s (h the keys of the MLP memory); with a
    zero retention the next read forgets the first gradient."""
    spec = level(rule="dmgd", momentum=0.5, hidden=16, lr=1.0, weight_decay=0.0)
    u = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    p = torch.zeros(3, 5, requires_grad=True)
    optimizer = memories(spec, [p])
    p.grad = u.clone()
    optimizer.step()
    w1 = optimizer.state[p]["w1_0"]
    keys = torch.tanh((u / u.norm(dim=1, keepdim=True)) @ w1.T) / 4
    torch.testing.assert_close(-p.detach(), 0.5 * (keys @ keys.T) @ u, rtol=1e-5, atol=1e-6)
    assert expand(spec).matrices.momenta[0].memory == "mlp" and expand(spec).others.momenta[0].memory == "matrix"


def test_deep_momentum_learns_its_keys_on_the_dot_objective():
    """The second write moves W1 along the dot objective's gradient, written here."""
    spec = level(rule="dmgd", momentum=0.5, hidden=8, lr=1.0, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    u1, u2 = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    p = torch.zeros(3, 5, requires_grad=True)
    optimizer = memories(spec, [p])
    p.grad = u1.clone()
    optimizer.step()
    w1, w2 = optimizer.state[p]["w1_0"].clone(), optimizer.state[p]["w2_0"].clone()
    p.grad = u2.clone()
    optimizer.step()
    w1_param = w1.clone().requires_grad_(True)
    unit = u2 / u2.norm(dim=1, keepdim=True)
    keys = torch.tanh(unit @ w1_param.T) / 8 ** 0.5
    (-(keys @ w2.T * u2).sum()).backward()  # the dot objective -Σ_r <W2 h_r, u_r>
    torch.testing.assert_close(optimizer.state[p]["w1_0"], w1 - 0.5 * w1_param.grad, rtol=1e-5, atol=1e-6)


def test_matrices_and_others_get_their_rules():
    """Under muon the hidden 2-D weights are orthogonalised; the embedding, norms and an
    untied head follow AdamW."""
    from nlc.training.optim import OuterLevels

    model = nlc.compile(MOMENTUM_AS_MEMORY.replace("rule: memories", "rule: muon").replace(
        "\n    matrices: {momenta: [{objective: dot, retention: 0.9, lr: 1.0}], decay: l2}", "").replace(
        "model: {width: 32,", "model: {tie_embeddings: false, width: 32,"), seed=0)
    optimizer = OuterLevels(model, 10).levels["opt"].optimizer
    names = {id(p): n for n, p in model.named_parameters()}
    ns = {names[id(p)] for group in optimizer.param_groups if group["rule"].scale == "match_adamw"
          for p in group["params"]}
    assert "embed.weight" not in ns and "head.weight" not in ns and not any("norm" in n for n in ns)
    assert {"b0_r0_attn.mixer.qkv.weight", "b0_r0_mlp.mixer.mlp.down.weight"} <= ns


def test_newton_schulz_pushes_every_singular_value_near_one():
    from nlc.optim import newton_schulz

    g = torch.randn(24, 40, generator=torch.Generator().manual_seed(2)) @ torch.diag(torch.logspace(-2, 1, 40))
    s = torch.linalg.svdvals(newton_schulz(g, 5))
    assert float(s.min()) > 0.3 and float(s.max()) < 1.3  # the quintic's band, not exactly 1


@pytest.mark.parametrize("memory, path, fragment", [
    ("{retention: 1.0, bias_correction: true}", "bias_correction", "never forgets"),
    ("{objective: l2, retention: 0.0, lr: 2.0}", "lr", "diverges"),
    ("{memory: mlp, output: newton_schulz}", "output", "belongs to a matrix memory"),
])
def test_gradient_memories_that_cannot_run_are_refused(memory, path, fragment):
    text = ("nlc: 1\nlevels:\n  mlp: {type: mlp}\n  opt: {type: optimizer, rule: memories, "
            f"matrices: {{momenta: [{memory}]}}}}\nmodel: {{width: 16, blocks: [{{layers: [mlp]}}]}}\n")
    spec, issues = validate(text)
    errors = [i for i in issues if i.severity == "error"]
    assert spec is None and errors[0].path.endswith(path) and fragment in errors[0].message


def test_a_parameter_without_a_gradient_is_skipped_as_torch_skips_it():
    """Adam's counts are per parameter (torch.optim.AdamW, some gradients missing); a slow
    memory that misses its write step writes at its next update, the mean of what it had."""
    spec = level(rule="adamw", betas=(0.9, 0.99), weight_decay=0.1, lr=1e-2)
    params, grads = stream(7, 6)
    for step in (1, 3, 4):
        grads[step][1] = None

    def run_missing(optimizer_of):
        ps = [p.clone().requires_grad_(True) for p in params]
        optimizer = optimizer_of(ps)
        for step in grads:
            for p, g in zip(ps, step):
                p.grad = None if g is None else g.clone()
            optimizer.step()
        return [p.detach() for p in ps]

    ours = run_missing(lambda ps: memories(spec, ps))
    theirs = run_missing(lambda ps: torch.optim.AdamW(ps, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1))
    assert_same(ours, theirs)
    slow = level(rule="memories", lr=0.1, weight_decay=0.0,
                 matrices={"momenta": [{"retention": 0.0, "lr": 1.0, "period": 2}]})
    p = torch.zeros(1, 1, requires_grad=True)
    optimizer = memories(slow, [p])
    written = []
    for g in (1.0, None, 5.0, 7.0):  # update 2 (a write step) has no gradient: update 3 writes mean(1, 5),
        p.grad = None if g is None else torch.full((1, 1), g)  # and the tick at 4 the gradient since, 7
        optimizer.step()
        written.append(float(optimizer.state[p]["m0"]))
    assert written == [0.0, 0.0, 3.0, 7.0]
