"""What makes the trials of one study comparable, stored with the study and checked on resume.

A search's trials are compared by their final validation bpb, so every trial of a study
must be trained under the same *budget*: the same training steps (``--steps`` or
``train.steps``), the same base spec (data, batch, sequence length, seed, model, levels,
...), the same objectives, pruner and search space. The budget is stored in the study's
user attr ``budget`` when the study is created, as a flat ``{dotted path: value}`` map of
the search spec (``search.trials`` and descriptions left out: more trials or other words
compare the same). A resumed search whose budget differs is refused with every change
shown ``path: old -> new``, unless ``allow_changes`` (``--allow-changes``): then the new
budget is stored and the change is kept in the user attr ``budget_changes`` (with the
number of trials run before it), which the report shows.
"""
from __future__ import annotations

import json
from typing import Any

import optuna

from ..spec.load import spec_to_data
from ..status import BAD_INPUT
from .space import SearchSpace
from .study import SearchError

BUDGET_ATTR, CHANGES_ATTR = "budget", "budget_changes"
SHOWN = 6  # changes named in the refusal; the rest are counted


class BudgetChangedError(SearchError):
    """A resumed search would train its new trials under another budget."""

    exit_status = BAD_INPUT


def search_budget(space: SearchSpace, steps: int | None) -> dict[str, Any]:
    """The budget of a search of ``space`` whose trials train ``steps`` steps (None: the
    spec's ``train.steps``), as a flat ``{dotted path: value}`` map."""
    data = spec_to_data(space.spec)
    search = data.pop("search")
    data.pop("name", None)
    if steps is not None:
        data["train"]["steps"] = steps
    flat = _flatten(data)
    flat["search.objectives"] = search["objectives"]
    flat["search.prune"] = search["prune"]
    for path, dim in search["space"].items():  # a dimension is one value: its path has dots
        flat[f"search.space.{path}"] = {k: v for k, v in dim.items() if v is not None}
    return flat


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings (and lists of mappings) as ``{dotted path: leaf}``, descriptions left out."""
    items = node.items() if isinstance(node, dict) else \
        enumerate(node) if isinstance(node, list) and any(isinstance(v, dict) for v in node) else None
    if items is None:
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in items:
        if key != "description":
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def budget_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``path: old -> new`` for every path whose value differs (``absent`` where missing)."""
    missing = object()
    lines = []
    for path in [*old, *(p for p in new if p not in old)]:
        before, after = old.get(path, missing), new.get(path, missing)
        if before != after:
            lines.append(f"{path}: {_show(before, missing)} -> {_show(after, missing)}")
    return lines


def _show(value: Any, missing: object) -> str:
    return "absent" if value is missing else json.dumps(value)


def check_budget(study: optuna.Study, budget: dict[str, Any], *, allow_changes: bool = False) -> list[str]:
    """Store ``budget`` in a new study; in an existing one, refuse a different budget
    (:class:`BudgetChangedError`) unless ``allow_changes``. The changes accepted."""
    stored = study.user_attrs.get(BUDGET_ATTR)
    if stored is None:  # a new study (or one made before budgets were stored)
        study.set_user_attr(BUDGET_ATTR, budget)
        return []
    changes = budget_changes(stored, budget)
    if not changes:
        return []
    if not allow_changes:
        shown = "; ".join(changes[:SHOWN]) + (f"; and {len(changes) - SHOWN} more" if len(changes) > SHOWN else "")
        raise BudgetChangedError(
            f"study '{study.study_name}' was run with other settings, so new trials would not be "
            f"comparable with its {len(study.get_trials(deepcopy=False))} trials: {shown}. "
            "Resume with the same spec, overrides and --steps, give another --out or --study, "
            "or pass --allow-changes to continue anyway")
    history = list(study.user_attrs.get(CHANGES_ATTR, []))
    history.append({"from_trial": len(study.get_trials(deepcopy=False)), "changes": changes})
    study.set_user_attr(CHANGES_ATTR, history)
    study.set_user_attr(BUDGET_ATTR, budget)
    return changes
