"""``nlc.bench.jobs``: units run once, in dependency order, saved as they finish, and a
rerun (same key) loads instead of recomputing -- in process and on worker processes alike."""
from __future__ import annotations

import json

import pytest

from nlc.bench.jobs import Unit, run_units, unit_path


def square(x: int, calls: str, log=print) -> dict:
    """A unit body that appends to ``calls`` (a file) each time it really runs."""
    with open(calls, "a", encoding="utf-8") as handle:
        handle.write(f"{x}\n")
    return {"value": x * x}


def fail(log=print) -> dict:
    raise RuntimeError("killed")


def _units(calls, base: int = 3, salt: str = "") -> list[Unit]:
    return [
        Unit("plus", square, lambda done: (done["base"]["value"] + 1, str(calls)), needs=("base",)),
        Unit("base", square, lambda done: (base, str(calls)), salt=salt),
    ]


def _calls(path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


@pytest.mark.parametrize("jobs", [1, 2])
def test_units_run_in_dependency_order_and_a_rerun_loads_them(tmp_path, jobs):
    calls = tmp_path / "calls.txt"
    done = run_units(_units(calls), tmp_path, jobs=jobs, log=lambda line: None)
    assert done == {"base": {"value": 9}, "plus": {"value": 100}}
    assert _calls(calls) == [3, 10]
    saved = json.loads(unit_path(tmp_path, "plus").read_text())
    assert saved["unit"] == "plus" and saved["result"] == {"value": 100}
    again = run_units(_units(calls), tmp_path, jobs=jobs, log=lambda line: None)
    assert again == done and _calls(calls) == [3, 10]  # nothing ran twice


def test_a_changed_unit_reruns_and_so_do_the_units_that_need_it(tmp_path):
    calls = tmp_path / "calls.txt"
    run_units(_units(calls), tmp_path, log=lambda line: None)
    run_units(_units(calls, salt="spec edited"), tmp_path, log=lambda line: None)
    assert _calls(calls) == [3, 10, 3]  # base reran; plus's arguments did not change: loaded
    done = run_units(_units(calls, base=4), tmp_path, log=lambda line: None)
    assert done["plus"] == {"value": 17 * 17} and _calls(calls) == [3, 10, 3, 4, 17]


def test_a_failed_unit_loses_only_itself(tmp_path):
    calls = tmp_path / "calls.txt"
    units = [Unit("base", square, lambda done: (3, str(calls))), Unit("broken", fail, lambda done: ())]
    with pytest.raises(RuntimeError, match="killed"):
        run_units(units, tmp_path, log=lambda line: None)
    assert unit_path(tmp_path, "base").exists() and not unit_path(tmp_path, "broken").exists()
    done = run_units(units[:1], tmp_path, log=lambda line: None)
    assert done == {"base": {"value": 9}} and _calls(calls) == [3]


def test_unmet_and_circular_needs_are_errors(tmp_path):
    orphan = [Unit("a", square, lambda done: (1, str(tmp_path / "c")), needs=("nobody",))]
    with pytest.raises(ValueError, match="nobody makes"):
        run_units(orphan, tmp_path)
    loop = [Unit("a", square, lambda done: (1, ""), needs=("b",)), Unit("b", square, lambda done: (1, ""), needs=("a",))]
    with pytest.raises(RuntimeError, match="cycle"):
        run_units(loop, tmp_path)


def test_unit_files_have_safe_names(tmp_path):
    assert unit_path(tmp_path, "HOPE, 1-level CMS").name == "HOPE_1-level_CMS.json"
    assert unit_path(tmp_path, "Titans (MAC)*").name == "Titans_MAC.json"


def settings_unit(plan, calls: str, log=print) -> dict:
    """A unit body keyed by a plan's settings, as every model unit of the comparison is."""
    with open(calls, "a", encoding="utf-8") as handle:
        handle.write(f"{plan.eval_batches}\n")
    return {"eval_batches": plan.eval_batches}


def test_a_changed_plan_setting_reruns_the_unit_instead_of_loading_it(tmp_path):
    from dataclasses import replace

    from nlc.bench.plan import MODES

    calls, plan = tmp_path / "calls.txt", MODES["smoke"].settings()

    def units(settings):
        return [Unit("HOPE", settings_unit, lambda done: (settings, str(calls)))]

    run_units(units(plan), tmp_path, log=lambda line: None)
    run_units(units(plan), tmp_path, log=lambda line: None)
    assert _calls(calls) == [1]  # same settings: loaded
    done = run_units(units(replace(plan, eval_batches=3)), tmp_path, log=lambda line: None)
    assert done["HOPE"] == {"eval_batches": 3} and _calls(calls) == [1, 3]
    run_units(units(replace(plan, grid_fraction=0.25)), tmp_path, log=lambda line: None)
    assert _calls(calls) == [1, 3, 1]  # a setting no result shows still makes a new key


def test_an_lm_run_folder_resumes_only_the_same_run(tmp_path):
    """A finished run is loaded from its checkpoint; a changed budget (which nlc.train would
    happily continue) or data starts afresh in an emptied folder."""
    from dataclasses import replace

    import torch

    from nlc.bench.lm import KEY_FILE, run_dir, train_lm
    from nlc.bench.params import ParamMatch
    from nlc.bench.plan import MODES, bench_model
    from nlc.bench.tune_split import LMData

    tokens = torch.randint(0, 256, (6000,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    starts = torch.zeros(1, dtype=torch.long)
    data = LMData("noise", "a" * 64, "val", tokens[:5000], tokens[5000:], 256, 5000, 1000, starts, starts)
    model, plan = bench_model("transformer"), replace(MODES["smoke"], steps=2, eval_every=2)
    match = ParamMatch("transformer", 1, 16, None, 1, ("model.heads=2", "model.width=16"))

    def run(plan, data):
        record, _ = train_lm(model, match, plan, 1e-3, 0, data, tmp_path)
        return record

    first = run(plan, data)
    assert first.resumed_at == 0 and [row[0] for row in first.curve] == [2]
    again = run(plan, data)
    assert again.resumed_at == 2 and again.val_bpb == first.val_bpb and again.curve == first.curve
    longer = run(replace(plan, steps=3, eval_every=3), data)
    assert longer.resumed_at == 0 and [row[0] for row in longer.curve] == [3]
    other = run(replace(plan, steps=3, eval_every=3), replace(data, sha256="b" * 64))
    assert other.resumed_at == 0
    folder = run_dir(tmp_path, model, "lm", 1e-3, 0)
    assert len((folder / KEY_FILE).read_text()) == 64 and (folder / "checkpoint").is_dir()


def test_the_transformers_seed_units_are_keyed_by_hopes_spec_too(tmp_path):
    """Its deployment's dynamic evaluation takes HOPE's CMS period and lr: a changed hope.yaml
    must rerun those units, not load them."""
    from nlc.bench.plan import bench_model, plan_for
    from nlc.bench.run import REFERENCE, model_units
    from nlc.bench.stamps import spec_digest

    units = {u.name: u for u in model_units(REFERENCE, plan_for("smoke").settings(), 100, tmp_path)}
    hope = spec_digest(bench_model("HOPE"))
    assert hope in units["Transformer++ / seed 0"].salt and hope not in units["Transformer++"].salt
    others = {u.name: u for u in model_units(bench_model("Samba*"), plan_for("smoke").settings(), 100, tmp_path)}
    assert hope not in others["Samba* / seed 0"].salt
