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
