"""Issue 18, search: ``best.yaml`` is byte for byte the spec the best trial trained (and
retraining it repeats the trial's val bpb); a resumed search refuses a changed budget
unless ``--allow-changes``; a trial that reached its final step is never pruned; the
``--help`` of ``nlc search`` and ``nlc search report`` ends with real examples."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
import typer
from optuna.trial import TrialState
from typer.testing import CliRunner

from nlc.cli.app import app
from nlc.search import SearchRun, load_study, run_worker, write_report
from nlc.search.budget import BudgetChangedError
from nlc.search.study import make_study, open_storage
from nlc.search.worker import run_trial, trial_seed
from nlc.graph.validate import load_spec
from nlc.status import BAD_INPUT
from nlc.training import checkpoint as ckpt

from .tiny import ROOT, write_tiny_search


SEED = ("train.seed=7",)  # trial seeds 7 * 1000003 + n: none equals the spec's


def _quiet(_: str) -> None:
    """Workers print one line per trial; the tests read the study instead."""


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 tiny trials of 3 steps each (the spec says 2: ``--steps`` must reach best.yaml)."""
    folder = tmp_path_factory.mktemp("best")
    run_worker(SearchRun(spec=str(write_tiny_search(folder)), out=folder / "run", trials=2, steps=3,
                         overrides=SEED, echo=_quiet))
    return folder / "run"


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial:
    return min((t for t in study.get_trials() if t.state == TrialState.COMPLETE), key=lambda t: t.values[0])


def test_best_yaml_is_the_spec_the_best_trial_trained(searched: Path, tmp_path: Path):
    study = load_study(searched)
    best = _best(study)
    report = write_report(study, tmp_path / "report")
    text = (tmp_path / "report" / "best.yaml").read_text(encoding="utf-8")
    assert report["best"][0]["number"] == best.number
    assert text == best.user_attrs["run_spec"]
    spec = load_spec(text)
    assert spec.train.steps == 3 and spec.train.seed == trial_seed(7, best.number)
    assert spec.levels["outer"].lr == pytest.approx(best.params["levels.outer.lr"]) and spec.search is None
    # the trial's own checkpoint was trained from exactly this text
    meta = ckpt.read_meta(searched / "trials" / f"{best.number:04d}")
    assert meta["spec_yaml"] == text and meta["spec_sha256"] == ckpt.spec_hash(spec) and meta["step"] == 3
    # nlc train best.yaml repeats the trial
    from nlc.training import train

    again = train(tmp_path / "report" / "best.yaml", out=tmp_path / "again", progress=False)
    assert again.val_bpb == pytest.approx(best.values[0], abs=1e-6)
    assert ckpt.read_meta(tmp_path / "again")["spec_sha256"] == meta["spec_sha256"]


def test_report_of_a_study_without_run_specs_skips_best_yaml(tmp_path: Path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = make_study(open_storage(tmp_path), "old", ["val_bpb"], "none", target=1)
    trial = study.ask()
    trial.set_user_attr("spec", "nlc: 1\n")  # what studies recorded before run specs
    study.tell(trial, values=[1.0])
    report = write_report(study, tmp_path / "report")
    assert report["files"]["best.yaml"].startswith("skipped: trial 0 has no recorded run spec")
    assert not (tmp_path / "report" / "best.yaml").exists()


def test_resume_refuses_a_changed_budget_unless_allowed(searched: Path, tmp_path: Path):
    out = tmp_path / "run"
    shutil.copytree(searched, out)
    spec = write_tiny_search(tmp_path)

    def resume(**given) -> list[int]:
        settings = {"trials": 2, "steps": 3, "overrides": SEED, **given}
        return run_worker(SearchRun(spec=str(spec), out=out, echo=echoed.append, **settings))

    echoed: list[str] = []
    assert resume() == []  # the same budget: nothing left to do, nothing refused
    with pytest.raises(BudgetChangedError, match=r"with its 2 trials: train\.steps: 3 -> 4\. .*--allow-changes"):
        resume(steps=4)
    with pytest.raises(BudgetChangedError, match=r"train\.batch: 2 -> 4"):
        resume(overrides=(*SEED, "train.batch=4"))
    wider = write_tiny_search(tmp_path / "wider", extra="    model.heads: {choice: [1, 2]}\n")
    with pytest.raises(BudgetChangedError, match=r'search\.space\.model\.heads: absent -> \{"choice": \[1, 2\]\}'):
        run_worker(SearchRun(spec=str(wider), out=out, trials=2, steps=3, overrides=SEED, echo=_quiet))
    # on the command line: exit 2, every change named, nothing trained
    cli = CliRunner().invoke(app, ["search", str(spec), *SEED, "--out", str(out), "--trials", "3", "--steps", "5"])
    assert cli.exit_code == BAD_INPUT, cli.output
    assert "error: study 'tiny_search' was run with other settings" in cli.output and "train.steps: 3 -> 5" in cli.output
    assert len(load_study(out).get_trials()) == 2
    # allowed: one more trial under the new budget, the change printed and kept
    assert resume(trials=3, steps=4, allow_changes=True) == [2]
    assert any("train.steps: 3 -> 4" in line and "from trial 2 on" in line for line in echoed)
    study = load_study(out)
    assert study.user_attrs["budget_changes"] == [{"from_trial": 2, "changes": ["train.steps: 3 -> 4"]}]
    assert load_spec(study.get_trials()[2].user_attrs["run_spec"]).train.steps == 4
    assert resume(trials=3, steps=4) == []  # the new budget is the study's now
    with pytest.raises(BudgetChangedError, match=r"train\.steps: 4 -> 3"):
        resume(trials=3)
    report = write_report(study, tmp_path / "report")
    assert report["budget"]["train.steps"] == 4 and report["budget_changes"][0]["from_trial"] == 2
    assert report["target_trials"] == 3


def test_a_trial_that_reached_its_final_step_is_complete_not_pruned(tmp_path: Path):
    """A pruner that prunes any bpb above 0 is not asked at the last validation: the
    trial of 1 step completes with its final val bpb (before, it was discarded as pruned)."""
    spec = write_tiny_search(tmp_path)
    run = SearchRun(spec=str(spec), out=tmp_path / "run", steps=1, echo=_quiet)
    study = optuna.create_study(storage=open_storage(tmp_path / "run"), study_name="prune",
                                pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    run_trial(run, run.space(), study, study.ask())
    (frozen,) = study.get_trials()
    assert frozen.state == TrialState.COMPLETE
    metrics = [json.loads(line) for line in (tmp_path / "run" / "trials" / "0000" / "metrics.jsonl").open()]
    final = [r["bpb"] for r in metrics if r["kind"] == "val"]
    assert frozen.values == final == [frozen.intermediate_values[1]]
    assert (tmp_path / "run" / "trials" / "0000" / ckpt.LATEST).is_dir()


@pytest.mark.parametrize("args", [["search"], ["search", "run"], ["search", "report"]])
def test_help_ends_with_real_examples(args: list[str]):
    """Two or three examples close the help; each names a bundled file and only options
    its verb has."""
    result = CliRunner().invoke(app, [*args, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines() if line.strip()]
    examples = lines[lines.index("Examples:") + 1:]
    assert 2 <= len(examples) <= 3 and all(e.startswith("nlc ") for e in examples), examples
    root = typer.main.get_command(app)
    for example in examples:
        words = example.split()[1:]
        verb = root.commands[words[0]]
        if words[0] == "search":
            verb = verb.commands["report" if words[1] == "report" else "run"]
        options = {opt for param in verb.params for opt in param.opts}
        assert {w for w in words if w.startswith("--")} <= options, example
        assert all((ROOT / w).is_file() for w in words if w.startswith("specs/")), example
