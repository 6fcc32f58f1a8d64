"""Seed statistics of the comparison (nlc.bench.aggregate), the summary's divergence rules
(nlc.bench.summary), the paper's ordering check (nlc.bench.ordering) and the report text
built on them: hand-computed values, no training."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from nlc.bench.aggregate import (UNRESOLVED_DIVERGED, UNRESOLVED_ONE_SEED, UNRESOLVED_SPREAD, Stat, format_stat,
                                 median, order, ranked, seed_stat)
from nlc.bench.ordering import check_claims, ordering_lines
from nlc.bench.plan import plan_for
from nlc.bench.report import render
from nlc.bench.summary import summarise

NAN, INF = math.nan, math.inf


def test_mean_and_std_use_the_finite_seeds_and_the_median_counts_diverged_ones_as_worst():
    stat = seed_stat([3.0, 1.0, 2.0], higher_is_better=False)
    assert (stat.mean, stat.std, stat.median, stat.n, stat.seeds, stat.diverged) == (2.0, 1.0, 2.0, 3, 3, 0)
    stat = seed_stat([1.0, NAN, 2.0], higher_is_better=False)        # one of three diverged: median of (1, 2, +inf)
    assert (stat.mean, stat.median, stat.n, stat.seeds) == (1.5, 2.0, 2, 3)
    assert stat.std == pytest.approx(math.sqrt(0.5)) and stat.divergence_rate == pytest.approx(1 / 3)
    stat = seed_stat([0.5, NAN, -INF], higher_is_better=False)       # two of three: the median is the worst value
    assert (stat.mean, stat.std, stat.median, stat.n, stat.diverged) == (0.5, 0.0, INF, 1, 2)
    assert seed_stat([0.9, NAN, NAN], higher_is_better=True).median == -INF   # accuracy: worst is -inf
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5 and median([1.0, INF]) == INF and median([7.0]) == 7.0
    assert seed_stat([1.0, NAN], higher_is_better=False).median == INF       # half diverged: worst


def test_missing_values_are_not_diverged():
    stat = seed_stat([None, 1.0, None], higher_is_better=True)
    assert (stat.seeds, stat.n, stat.diverged, stat.median) == (1, 1, 0, 1.0)
    stat = seed_stat([None, NAN], higher_is_better=True)
    assert (stat.seeds, stat.n, stat.diverged, stat.divergence_rate, stat.mean, stat.median) == (1, 0, 1, 1.0, None,
                                                                                                  -INF)
    stat = seed_stat([None, None], higher_is_better=True)
    assert (stat.seeds, stat.median, stat.divergence_rate) == (0, None, None)


def test_ranks_use_the_median_with_diverged_seeds_worst_and_ties_share_a_rank():
    stats = ranked({"steady": [1.0, 1.1, 1.2],       # median 1.1
                    "lucky": [0.5, NAN, NAN],        # best mean, but median +inf
                    "one_lost": [0.9, 1.0, NAN],     # median 1.0
                    "twin": [1.1, 1.1, 1.1],         # median 1.1: ties with steady
                    "lost": [NAN, NAN, NAN],         # median +inf: ties with lucky
                    "absent": [None, None]}, higher_is_better=False)
    assert {m: s.rank for m, s in stats.items()} == {"one_lost": 1, "steady": 2, "twin": 2, "lucky": 4, "lost": 4,
                                                     "absent": None}
    assert stats["lucky"].mean == 0.5 and stats["lost"].mean is None
    accuracy = ranked({"a": [0.2, 0.3, 0.4], "b": [0.9, NAN, NAN], "c": [0.1, 0.1, 0.1]}, higher_is_better=True)
    assert {m: s.rank for m, s in accuracy.items()} == {"a": 1, "c": 2, "b": 3}


def test_a_pair_is_ordered_only_beyond_the_spread_of_both():
    def stat(*values, higher=False):
        return seed_stat(list(values), higher_is_better=higher)

    spread_one = stat(1.0, 2.0, 3.0)                          # median 2, std exactly 1
    assert order(spread_one, stat(3.0, 3.0, 3.0), False).reason == UNRESOLVED_SPREAD   # difference 1 = spread 1
    assert order(spread_one, stat(3.5, 3.5, 3.5), False).verdict == "ahead"          # 1.5 > 1
    assert order(stat(3.5, 3.5, 3.5), spread_one, False).verdict == "behind"
    assert order(spread_one, stat(3.5, 3.5, 3.5), True).verdict == "behind"          # higher is better
    assert order(stat(1.0), stat(5.0, 5.1), False) == order(stat(1.0), stat(1.0), False)
    assert order(stat(1.0), stat(5.0, 5.1), False).reason == UNRESOLVED_ONE_SEED
    assert order(stat(1.0, NAN, NAN), stat(NAN, NAN, NAN), False).reason == UNRESOLVED_DIVERGED
    assert order(stat(1.0, NAN, NAN), stat(3.0, 3.1, 3.2), False).verdict == "behind"   # median +inf, spread 0
    assert order(stat(0.9, NAN, NAN, higher=True), stat(0.1, 0.2, 0.3, higher=True), True).verdict == "behind"
    assert order(stat(None, None), stat(1.0, 2.0), False).verdict == "missing"


def test_format_shows_mean_std_median_and_diverged():
    assert format_stat(seed_stat([3.0, 1.0, 2.0], False)) == "2.000 ± 1.000, med 2.000"
    assert format_stat(seed_stat([1.0, NAN, NAN], False)) == "1.000, med diverged"
    assert format_stat(seed_stat([NAN, NAN], False)) == "diverged"
    assert format_stat(seed_stat([0.25], True), percent=True) == "25.0"
    assert format_stat(seed_stat([None], True)) == "--"
    stat = seed_stat([1.0, NAN, 2.0], False)
    assert Stat.from_json(stat.to_json()) == stat and stat.to_json()["divergence_rate"] == pytest.approx(1 / 3)


seed_values = st.lists(st.one_of(st.floats(0, 10), st.just(NAN), st.none()), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdef"), seed_values, min_size=1), st.booleans(), st.randoms())
def test_ranks_do_not_depend_on_the_order_of_the_seeds(values, higher, rng):
    shuffled = {m: rng.sample(v, len(v)) for m, v in values.items()}
    before, after = ranked(values, higher), ranked(shuffled, higher)
    assert {m: (s.rank, s.median, s.n, s.seeds) for m, s in before.items()} == \
           {m: (s.rank, s.median, s.n, s.seeds) for m, s in after.items()}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=5), st.lists(st.floats(0, 1), min_size=1, max_size=5),
       st.floats(1e-3, 5), st.booleans(), st.data())
def test_a_model_better_on_every_seed_ranks_strictly_better(a, b, gap, higher, data):
    # b moved so that every seed of "good" beats every seed of "bad"; "bad" may also diverge
    bad = [x - max(b) + min(a) - gap for x in b] if higher else [x + max(a) + gap for x in b]
    if data.draw(st.booleans()):
        bad.append(NAN)
    stats = ranked({"good": a, "bad": bad}, higher)
    assert stats["good"].rank < stats["bad"].rank
    verdict = order(stats["good"], stats["bad"], higher).verdict
    assert verdict in ("ahead", "unresolved")   # never reversed


# --- a synthetic comparison: four paper models and one ablation, three seeds --------------------------------

LM = {"HOPE": [1.0, 1.1, 1.2],               # median 1.1, spread 0.1
      "Titans (LMM)": [0.5, 0.6, 0.7],       # median 0.6: ahead of HOPE (the paper says behind)
      "Samba*": [1.05, 1.15, 1.25],          # median 1.15: within the spread of HOPE
      "Transformer++": [1.0, NAN, NAN],      # diverged on 2 of 3 seeds: median +inf
      "HOPE w/o CMS": [1.0, 1.1, 1.2]}       # the same as HOPE


def _entry(bpb: list[float], loss_nan_seed: int | None = None) -> dict:
    seeds = [str(s) for s in range(len(bpb))]
    task = {s: {"accuracy": {"32x4": 0.5, "64x8": 0.25}, "diverged": int(s) == loss_nan_seed,
                "final_loss": NAN if int(s) == loss_nan_seed else 1.0} for s in seeds}
    return {"spec": "x.yaml", "match": {"width": 16, "hidden": None, "deviation": 0.0}, "params_compiled": 100,
            "sweep": [{"lr": 1e-3, "seed": 0, "val_bpb": bpb[0]}], "best_lr": 1e-3,
            "lm": [{"lr": 1e-3, "seed": int(s), "val_bpb": v, "tokens_per_s": 100.0} for s, v in zip(seeds, bpb)],
            "retrieval": {t: {s: {"128": None, "256": 0.5} for s in seeds} for t in ("passkey", "niah_number",
                                                                                     "niah_word")},
            "synthetic": {"mqar": task,
                          "copy": {s: {"accuracy": {"40": 0.5, "64": 0.25}, "diverged": False, "final_loss": 1.0}
                                   for s in seeds}},
            "continual": [{"seed": int(s), "metrics": {"acc": 2.0, "bwt": 0.0, "forgetting": 0.1}} for s in seeds]}


def _results() -> dict:
    models = {label: _entry(bpb, loss_nan_seed=1 if label == "Samba*" else None) for label, bpb in LM.items()}
    protocols = {p.task: p for p in plan_for("smoke").synthetic}
    calibration = {"settings": {"max_steps": 2, "eval_every": 2, "target": 0.0, "margin": 1.0}, "budget": 2,
                   "reached_at": 2, "confirmations": [[2, 0.5]], "counts": True,
                   "reason": "the reference reaches 50.0% in a 2-step run"}
    results = {"plan": {**plan_for("smoke").to_json(), "seeds": [0, 1, 2]}, "models": models, "probes": {},
               "synthetic": {task: {"protocol": protocols[task].to_json(), "calibration": calibration, "chance": 0.01}
                             for task in ("mqar", "copy")},
               "target_params": 100, "command": "nlc bench paper --smoke", "started": "t", "wall_seconds": 1.0,
               "machine": {"nproc": 2, "cpu": "cpu", "torch": "x", "threads": 1, "python": "3", "platform": "p"}}
    results["summary"] = summarise(results)
    return results


def test_the_summary_counts_diverged_lm_and_task_runs_and_keeps_missing_lengths_apart():
    stats = _results()["summary"]["metrics"]
    transformer = stats["val_bpb"]["stats"]["Transformer++"]
    assert (transformer["median"], transformer["n"], transformer["seeds"], transformer["rank"]) == (INF, 1, 3, 5)
    assert transformer["divergence_rate"] == pytest.approx(2 / 3) and transformer["mean"] == 1.0
    passkey = stats["passkey"]["stats"]["Transformer++"]      # scored on the diverged LMs: diverged too
    assert (passkey["n"], passkey["seeds"], passkey["median"], passkey["rank"]) == (1, 3, -INF, 5)
    assert stats["passkey@128"]["stats"]["HOPE"]["seeds"] == 0                  # no examples: missing, not diverged
    samba = stats["mqar"]["stats"]["Samba*"]          # seed 1 diverged; the column is the training shape only
    assert (samba["n"], samba["diverged"], samba["median"]) == (2, 1, 0.5)
    assert stats["mqar@64x8"]["stats"]["Samba*"]["mean"] == 0.25                # the test shape: its own metric
    assert stats["copy"]["stats"]["Samba*"]["diverged"] == 0


def test_the_ordering_check_counts_agree_reversed_and_unresolved_pairs():
    results = _results()
    checks = check_claims(results["summary"], results["models"])
    bpb = next(c for c in checks["HOPE > Titans > Samba > Transformer"] if c.key == "val_bpb")
    assert bpb.counts() == {"agree": 4, "reversed": 1, "unresolved": 1}
    assert [(p.ahead, p.behind) for p in bpb.of("reversed")] == [("HOPE", "Titans (LMM)")]
    (unresolved,) = bpb.of("unresolved")
    assert (unresolved.ahead, unresolved.behind, unresolved.reason) == ("HOPE", "Samba*", UNRESOLVED_SPREAD)
    passkey = next(c for c in checks["HOPE > Titans > Samba > Transformer"] if c.key == "passkey")
    assert passkey.counts() == {"agree": 3, "reversed": 0, "unresolved": 3}   # only the diverged Transformer loses
    (ablation,) = [c for c in checks["HOPE > its ablations"] if c.key == "val_bpb"]
    assert ablation.counts() == {"agree": 0, "reversed": 0, "unresolved": 1}
    text = "\n".join(ordering_lines(results["summary"], results["models"]))
    assert ("* **val bpb**: 4 agree, 1 reversed, 1 unresolved (of 6 pairs); agree: HOPE 1.100 ± 0.100 vs "
            "Transformer++ diverged; Titans (LMM) 0.600 ± 0.100 vs Samba* 1.150 ± 0.100;") in text
    assert "unresolved: HOPE 1.100 ± 0.100 vs Samba* 1.150 ± 0.100 (within the spread)." in text
    assert "* **CL ACC (bpb)**: 0 agree, 0 reversed, 6 unresolved (of 6 pairs): every model's median is 2.000." in text


def test_the_report_shows_divergence_and_writes_no_unmeasured_explanation(tmp_path):
    text = render(_results(), {}, tmp_path)
    assert "| Transformer++ | 1.000, med diverged (5) [1/3 finite] |" in text
    assert "| Samba* | 0/1 (0%) | 0/3 (0%) | 1/3 (33%) | 0/3 (0%) | 0/3 (0%) |" in text   # the divergence table
    assert "| HOPE | 1.100 ± 0.100, med 1.100 (2) |" in text     # ties with HOPE w/o CMS
    assert "Neighbouring pairs ordered: 2 of 4 (Titans (LMM) ahead of HOPE; Samba* ahead of Transformer++)" in text
    assert "Samba* mqar (seed 1)" in text and "Transformer++ LM (lr 0.001, seed 1)" in text
    assert "reached 0% at step 2 of the curve run; confirmation: a 2-step run: 50.0%: budget **2 steps**" in text
    for unmeasured in ("expected, honest outcome", "far from converged", "do compare recall mechanisms",
                       "no measurable effect", "has little room to act"):
        assert unmeasured not in text
