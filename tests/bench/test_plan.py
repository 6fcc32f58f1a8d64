"""The comparison's plans: the full budgets learn (1M training tokens per reported run, 64k
distinct validation tokens, three seeds), the GPU profile sizes up, the lr grids are geometric,
probes keep the token budget, name known models, follow a ``--models`` subset; the wall-time
estimate adds up; unknown names and impossible lengths are clear errors."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from nlc.bench import budget
from nlc.bench.lr_grid import LRGridError
from nlc.bench.plan import COST_ORDER, MODELS, MODES, RATES_AT, TASK_RATES_AT, Probe, bench_model, plan_for
from nlc.data import sample_batch
from nlc.errors import NLCError
from nlc.training.config import step_seed

SHAKESPEARE_VAL = 252_841  # validation tokens of shakespeare (bytes): docs/data.md


@pytest.mark.parametrize("mode", list(MODES))
def test_every_probe_names_a_model_of_its_plan_and_keeps_the_tokens_per_step(mode):
    plan = MODES[mode]
    labels = {m.label for m in plan.bench_models()}
    for probe in plan.probes:
        assert probe.model in labels
        changed = plan.probe_plan(probe)
        assert changed.batch * changed.seq_len == plan.batch * plan.seq_len
        assert changed.tokens_per_run == plan.tokens_per_run * probe.steps_factor
        assert changed.probes == () and changed.models == ()


def test_cost_order_covers_every_model():
    assert sorted(COST_ORDER) == sorted(m.label for m in MODELS)


def test_a_model_subset_keeps_only_its_probes():
    plan = plan_for("quick", ("transformer", "hope_no_cms"))
    assert {p.model for p in plan.probes} == {"Transformer++", "HOPE w/o CMS"}
    assert len(plan.probes) == 3
    assert [m.label for m in plan.bench_models()] == ["Transformer++", "HOPE w/o CMS"]


def _distinct_scored(plan, seed: int, split_tokens: int) -> int:
    """Distinct positions of a split that nlc.train's validation scores (evaluate_lm's draws)."""
    generator = torch.Generator().manual_seed(step_seed(seed, 0))
    positions = torch.arange(split_tokens)
    scored = [sample_batch(positions, plan.batch, plan.seq_len, generator)[1] for _ in range(plan.eval_batches)]
    return torch.cat(scored).unique().numel()


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_full_budgets_learn(device):
    plan = plan_for("full", device=device)
    assert plan.tokens_per_run >= 2**20 and plan.eval_tokens >= 2**16
    assert plan.seeds == (0, 1, 2) and plan.continual_seeds == (0, 1, 2)
    assert plan.models == tuple(m.label for m in MODELS)
    for seed in plan.seeds:  # the windows overlap: the distinct tokens scored are what counts
        assert _distinct_scored(plan, seed, SHAKESPEARE_VAL) >= 2**16
    assert plan.grid_steps == plan.steps // 4 and plan.grid_plan().eval_every == plan.grid_steps
    assert plan.steps % plan.eval_every == 0 and plan.evals_per_run == 4


def test_cuda_sizes_the_full_run_up_and_keeps_the_small_modes():
    cpu, gpu = plan_for("full"), plan_for("full", device="cuda")
    assert (gpu.mode, gpu.device, cpu.device) == ("gpu", "cuda", "cpu")
    assert gpu.tokens_per_run == 2 * cpu.tokens_per_run and gpu.reference_width == 2 * cpu.reference_width
    assert gpu.settings() != cpu.settings()  # so no unit of one is ever loaded for the other
    quick = plan_for("quick", device="cuda")
    assert quick.device == "cuda" and replace(quick, device="cpu") == MODES["quick"]
    with pytest.raises(NLCError, match="unknown device 'tpu'"):
        plan_for("full", device="tpu")
    with pytest.raises(NLCError, match="unknown benchmark mode 'gpu'"):
        plan_for("gpu")


@pytest.mark.parametrize("mode", list(MODES))
def test_every_lr_grid_is_geometric_with_its_ratio(mode):
    plan = MODES[mode]
    assert all(b / a == pytest.approx(plan.lr_ratio) for a, b in zip(plan.lrs, plan.lrs[1:]))
    with pytest.raises(LRGridError, match="not geometric"):
        replace(plan, lrs=(1e-3, 1.5e-3, 4e-3))


def test_the_estimate_adds_up_the_measured_rates(monkeypatch):
    plan = plan_for("full", ("transformer", "hope"), seeds=1)
    rates = {"Transformer++": (1024.0, 4096.0), "HOPE": (512.0, 1024.0)}
    task_rates = {"Transformer++": 800.0, "HOPE": 200.0}  # at the tasks' width
    monkeypatch.setattr(budget, "RATES", rates)
    monkeypatch.setattr(budget, "TASK_RATES", task_rates)
    found = budget.estimate(plan, jobs=1)
    continual = 4 * 16_384  # 1 seed x 4 stages x tokens per stage
    tasks = 1 * 8000 * (4096 + 4096 + 8192)  # 1 seed x the calibration's step cap x each task's tokens a step
    for label, (train_rate, eval_rate) in rates.items():
        grid = 3 * (256 * 1024 / train_rate + 81_920 / eval_rate)
        seed = 1024 * 1024 / train_rate + 4 * 81_920 / eval_rate
        continual_evals = 1 * 4 * 5 * 81_920 / eval_rate  # each stage: every domain, and its own run's
        assert found.per_model[label] == pytest.approx(grid + seed + continual / train_rate + tasks / task_rates[label]
                                                       + continual_evals)
    assert found.wall == pytest.approx(found.compute) and found.compute == pytest.approx(sum(found.per_model.values()))
    two = budget.estimate(plan, jobs=2)
    assert two.wall == pytest.approx(max(two.compute / 2, found.per_model["HOPE"]))  # one seed: HOPE's chain
    assert two.worst_wall > two.wall
    assert budget.estimate(plan_for("quick"), jobs=1) is None
    assert "measured at another size: reference_width 32 (measured: 64)" in budget.missing_rates(plan_for("quick"))
    assert "TASK_RATES were measured at another size: task_width 64 (measured: 128)" in budget.missing_rates(
        replace(plan, task_width=64))
    monkeypatch.setattr(budget, "TASK_RATES", {"HOPE": 1.0})
    assert budget.missing_rates(plan) == "no measured rate in nlc.bench.plan.TASK_RATES for Transformer++"
    monkeypatch.setattr(budget, "RATES", {})
    assert budget.missing_rates(plan) == "no measured rate in nlc.bench.plan.RATES for Transformer++, HOPE"


def test_the_rates_are_measured_at_the_full_size():
    plan = plan_for("full")
    assert {key: getattr(plan, key) for key in RATES_AT} == RATES_AT
    assert {key: getattr(plan, key) for key in TASK_RATES_AT} == TASK_RATES_AT
    assert budget.missing_rates(plan) is None  # every model of the full run has measured rates


def test_bad_names_and_lengths_are_clear_errors():
    with pytest.raises(NLCError, match=r"unknown model\(s\) \['gpt5'\].*hope_cms_single"):
        bench_model("gpt5")
    with pytest.raises(NLCError, match="seq_len 96 does not divide the 1024 tokens"):
        MODES["full"].probe_plan(Probe("odd", "HOPE", "context", "sequences of 96 tokens", seq_len=96))
    with pytest.raises(NLCError, match="unknown benchmark mode"):
        plan_for("huge")


def test_the_task_units_keep_their_keys_when_only_lm_settings_change(tmp_path):
    """The calibrations and every model's synthetic tasks read only the protocols and
    TaskSettings: a new LM budget, grid, continual stream or deployment reruns the LM units,
    not them; a new task width reruns them too."""
    from nlc.bench.jobs import unit_key
    from nlc.bench.run import calibration_name, model_units

    def keys(plan):
        calibrations = {calibration_name(p.task): {"calibration": {"budget": 2}} for p in plan.synthetic}
        done = {**calibrations, "Transformer++": {"best_lr": 1e-3, "match": {}}}
        units = model_units(bench_model("Transformer++"), plan.settings(), 1000, tmp_path)
        return {u.name: unit_key(u, u.args(done)) for u in units}, {p.task: p for p in plan.synthetic}

    plan = plan_for("smoke")
    base, protocols = keys(plan)
    lm_only = replace(plan, steps=8, lrs=(2e-3, 4e-3), continual_tokens=128, deploy_tokens=128)
    changed, _ = keys(lm_only)
    assert plan.task_settings() == lm_only.task_settings()
    assert changed["Transformer++ / synthetic"] == base["Transformer++ / synthetic"]
    for name in ("Transformer++", "Transformer++ / seed 0", "Transformer++ / continual"):
        assert changed[name] != base[name]
    wider, _ = keys(replace(plan, task_width=32))
    assert wider["Transformer++ / synthetic"] != base["Transformer++ / synthetic"]
    assert plan.task_settings().reference_width == plan.reference_width  # no task_width: the LM's
