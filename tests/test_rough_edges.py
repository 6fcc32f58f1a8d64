"""Issue 18, item 7: the rough edges a new user met, each pinned by a test.

a. model output printed safely (control characters as visible escapes; ``--raw`` keeps them);
b. importing nlc and drawing a plot leave matplotlib's backend alone;
c. atomically written files get the umask's permissions, not mkstemp's 0600;
d. ``tokenizer: gpt2`` sets ``vocab`` to 50257; a smaller vocab is refused at its line;
e. a warm-up as long as the run is warned about at its line;
f. ``nlc eval`` numbers carry a standard error, in tables and JSON;
g. every verb's ``--help`` ends with examples that run as written.
"""
from __future__ import annotations

import glob
import json
import math
import os
import shlex
import stat
import subprocess
import sys
import textwrap
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import typer

import nlc.training  # noqa: F401  (the module, for monkeypatching its train)
from typer.testing import CliRunner

from nlc.cli.app import app
from nlc.generate import printable
from nlc.graph.validate import validate

ROOT = Path(__file__).resolve().parents[1]

HOSTILE = "ok\x1b]0;owned\x07\x1b[2J\x9b31m\rback\x7f\u202eevil\ttab\nnext"
SHOWN = "ok\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\x0dback\\x7f\\u202eevil\ttab\nnext"


# --------------------------------------------------------------------------- a. printing


def test_printable_escapes_every_control_character_but_newline_and_tab():
    assert printable(HOSTILE) == SHOWN
    assert printable("héllo wörld ✓\n\tdone") == "héllo wörld ✓\n\tdone"  # printable text untouched
    shown = printable("".join(map(chr, range(0x200))))
    assert {c for c in shown if unicodedata.category(c) == "Cc"} == {"\n", "\t"}
    assert shown.count("\\x") == 0x20 - 2 + 1 + 0x20  # C0 but newline and tab, DEL, C1


@pytest.fixture
def hostile_model(monkeypatch):
    """Every sample is HOSTILE (the model and its checkpoint stubbed: printing is tested)."""
    monkeypatch.setattr("nlc.generate.generate", lambda *args, **kwargs: HOSTILE)
    monkeypatch.setattr("nlc.cli.generate.load_checkpoint_or_exit", lambda path: (object(), {}))


def test_generate_escapes_the_model_output_and_raw_keeps_it(hostile_model):
    shown = CliRunner().invoke(app, ["generate", "ckpt", "--prompt", "P:"])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == "P:" + SHOWN + "\n"
    raw = CliRunner().invoke(app, ["generate", "ckpt", "--prompt", "P:", "--raw"])
    assert raw.exit_code == 0, raw.output
    assert raw.stdout_bytes == ("P:" + HOSTILE + "\n").encode("utf-8")


def test_train_escapes_its_closing_sample(hostile_model, monkeypatch, tmp_path):
    done = SimpleNamespace(val_bpb=2.5, checkpoint=tmp_path / "checkpoint", model=object())
    monkeypatch.setattr(sys.modules["nlc.training"], "train", lambda *args, **kwargs: done)  # nlc.train: the function
    result = CliRunner().invoke(app, ["train", "specs/transformer.yaml", "--out", str(tmp_path),
                                      "--prompt", "P:"])
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(f"sample:\nP:{SHOWN}\n")
    assert "\x1b" not in result.stdout and "\x9b" not in result.stdout


# --------------------------------------------------------------------------- b. matplotlib backend


def test_nlc_leaves_the_matplotlib_backend_alone(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        import matplotlib
        matplotlib.use("svg")
        import nlc, nlc.figures, nlc.training.plots, nlc.continual.plots, nlc.bench.plots, nlc.search.report
        from nlc.training.plots import plot_curves
        records = [{{"kind": "train", "step": 1, "bpb": 3.0}}, {{"kind": "val", "step": 1, "bpb": 2.9}}]
        path = plot_curves(records, {str(tmp_path / "curves.png")!r}, title="t")
        print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules, path.read_bytes()[:4] == b"\\x89PNG")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MPLBACKEND": ""}, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["svg", "False", "True"]


# --------------------------------------------------------------------------- c. file modes


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_follow_the_umask(tmp_path, mask, mode):
    from nlc.figures import new_figure, save_figure
    from nlc.files import atomic_write_text

    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "report.json", "{}\n")
        save_figure(new_figure(1, 1), tmp_path / "figure.png")
    finally:
        os.umask(old)
    for name in ("report.json", "figure.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png", "report.json"]  # no temp left


# --------------------------------------------------------------------------- d. gpt2 vocabulary

GPT2_SPEC = """nlc: 1
levels:
  attn: {type: attention}
  outer: {type: optimizer, rule: adamw, lr: 1.0e-3, warmup: 5}
model:
  width: 32
  tokenizer: gpt2
  blocks:
    - layers: [attn]
train: {seq_len: 32, batch: 2, steps: 50}
"""


def test_the_gpt2_tokenizer_sets_the_vocabulary():
    from nlc.data.tokenizers import ByteTokenizer, GPT2Tokenizer
    from nlc.spec.model import TOKENIZER_VOCAB

    assert TOKENIZER_VOCAB == {"bytes": ByteTokenizer.vocab_size, "gpt2": GPT2Tokenizer.vocab_size}
    spec, issues = validate(GPT2_SPEC)
    assert issues == [] and spec.model.vocab == 50257
    spec, _ = validate(GPT2_SPEC.replace("tokenizer: gpt2", "tokenizer: gpt2\n  vocab: 50304"))
    assert spec.model.vocab == 50304  # padded: allowed
    spec, issues = validate(GPT2_SPEC.replace("tokenizer: gpt2", "tokenizer: gpt2\n  vocab: 1000"))
    assert spec is None and len(issues) == 1
    assert (issues[0].path, issues[0].line) == ("model.vocab", 8)
    assert "the gpt2 tokenizer has 50257 tokens: a vocab of 1000" in issues[0].message
    assert validate(GPT2_SPEC.replace("  tokenizer: gpt2\n", ""))[0].model.vocab == 256


# --------------------------------------------------------------------------- e. warm-up


@pytest.mark.parametrize("warmup,steps,period,warned", [
    (5, 50, 1, False), (50, 50, 1, True), (80, 50, 1, True), (20, 50, 2, False), (25, 50, 2, True)])
def test_a_warmup_as_long_as_the_run_is_warned_about(warmup, steps, period, warned):
    text = GPT2_SPEC.replace("warmup: 5", f"warmup: {warmup}, period: {{steps: {period}}}") \
        .replace("steps: 50}", f"steps: {steps}}}")
    spec, issues = validate(text)
    assert spec is not None  # a warning never fails validation
    assert [(i.path, i.line, i.severity) for i in issues] == \
        ([("levels.outer.warmup", 4, "warning")] if warned else [])
    if warned:
        assert f"warmup {warmup} is not shorter than the {steps // period} updates 'outer' makes" \
            in issues[0].message


# --------------------------------------------------------------------------- f. eval spread


class Bigram(torch.nn.Module):
    """A byte bigram model with the runtime's call signature."""

    vocab = 256

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Embedding(256, 256)
        torch.nn.init.normal_(self.table.weight, generator=torch.Generator().manual_seed(0))

    def init_state(self, batch):
        return {}

    def forward(self, x, state, targets=None):
        return self.table(x), state


def test_lm_bpb_has_the_standard_error_over_batches():
    import torch.nn.functional as F

    from nlc.data import sample_batch
    from nlc.evaluate import evaluate_lm, lm_json, lm_table

    model, tokens = Bigram(), torch.randint(0, 256, (4000,), generator=torch.Generator().manual_seed(1))
    result = evaluate_lm(model, tokens, 2, 16, 5, seed=3, bytes_per_token=1.5)
    generator = torch.Generator().manual_seed(3)
    bpb = []
    for _ in range(5):
        x, y = sample_batch(tokens, 2, 16, generator)
        bpb.append(F.cross_entropy(model.table(x).flatten(0, 1), y.flatten()).item() / (math.log(2) * 1.5))
    mean = sum(bpb) / 5
    stderr = math.sqrt(sum((b - mean) ** 2 for b in bpb) / 4 / 5)
    assert result["bpb"] == pytest.approx(mean, rel=1e-6) and result["bpb_stderr"] == pytest.approx(stderr, rel=1e-5)
    assert result["loss_stderr"] == pytest.approx(stderr * math.log(2) * 1.5, rel=1e-5) and stderr > 0
    assert evaluate_lm(model, tokens, 2, 16, 1, seed=3)["bpb_stderr"] is None  # one batch: no spread
    payload = lm_json({16: result}, 16, "toy")["lengths"]["16"]
    assert payload["bpb_stderr"] == result["bpb_stderr"] and payload["bpb"] == result["bpb"]
    row = list(lm_table({16: result}, 16, "toy").columns[2].cells)
    assert row == [f"{result['bpb']:.4f} ± {result['bpb_stderr']:.4f}"]


def test_task_accuracy_has_its_standard_error():
    from nlc.evaluate import TaskReport, accuracy_stderr, task_table
    from nlc.tasks import TaskBatch, score

    targets = torch.tensor([[1, 2, -100], [3, -100, -100], [4, 5, 6], [7, -100, -100]])
    mask = targets != -100
    batch = TaskBatch("toy", targets.clamp(min=0), targets, mask, "per_token")
    guess = torch.tensor([[1, 0, 0], [3, 0, 0], [4, 5, 0], [0, 0, 0]])  # right: 1/2, 1/1, 2/3, 0/1
    logits = torch.nn.functional.one_hot(guess, 8).float()
    p = score(batch, logits)
    assert p == pytest.approx(4 / 7)
    right, scored = torch.tensor([1., 1., 2., 0.]), torch.tensor([2., 1., 3., 1.])
    expected = math.sqrt(((right - p * scored) ** 2).sum().item() / (4 * 3)) / scored.mean().item()
    assert accuracy_stderr(batch, logits, p) == pytest.approx(expected)
    whole = TaskBatch("toy", batch.tokens, targets, mask, "per_example")
    assert accuracy_stderr(whole, logits, 0.25) == pytest.approx(math.sqrt(0.25 * 0.75 / 4))
    report = TaskReport("toy", "per_example", 4, 0, 16, accuracy={16: 0.25, 32: 0.0},
                        stderr={16: math.sqrt(0.25 * 0.75 / 4), 32: 0.0})
    assert list(task_table(report).columns[1].cells) == ["0.250 ± 0.217", "0.000 ± 0.000"]
    assert report.to_json()["stderr"] == {"16": pytest.approx(0.2165, abs=1e-4), "32": 0.0}


def test_eval_json_carries_the_spread(monkeypatch, tmp_path):
    from nlc.evaluate import TaskReport

    report = TaskReport("mqar", "per_token", 4, 0, 16, accuracy={16: 0.5}, stderr={16: 0.1})
    monkeypatch.setattr("nlc.evaluate.evaluate_task", lambda *args, **kwargs: report)
    model = SimpleNamespace(spec=SimpleNamespace(name="toy", train=SimpleNamespace(seq_len=16)))
    monkeypatch.setattr("nlc.cli.eval.load_checkpoint_or_exit", lambda path: (model, {}))
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["eval", "ckpt", "--task", "mqar", "--lengths", "16", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "0.500 ± 0.100" in result.stdout
    assert json.loads(out.read_text())["stderr"] == {"16": 0.1}


# --------------------------------------------------------------------------- g. --help examples


def _is_group(command) -> bool:
    return hasattr(command, "commands")  # typer vendors click: no click.Group to check against


def _commands(group, prefix: tuple[str, ...] = ()):
    """Every command and group under ``group``, as (path, click command)."""
    for name, command in group.commands.items():
        yield prefix + (name,), command
        if _is_group(command):
            yield from _commands(command, prefix + (name,))


ROOT_COMMAND = typer.main.get_command(app)
ALL_COMMANDS = dict(_commands(ROOT_COMMAND))
MINE = ("validate", "show", "graph", "schedule", "schema", "compile", "train", "eval", "generate", "continual",
        "data", "bench")


@pytest.mark.parametrize("path", sorted(ALL_COMMANDS), ids=" ".join)
def test_every_help_ends_with_examples(path):
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.output
    examples = result.output[result.output.rindex("Examples:"):]
    assert f"nlc {path[0]}" in examples  # (a group's default verb may go unnamed: nlc search SPEC)


def _examples(path: tuple[str, ...]) -> list[list[str]]:
    epilog = ALL_COMMANDS[path].epilog or ""
    lines = [line.strip() for line in epilog.split("Examples:", 1)[-1].splitlines()]
    return [shlex.split(line.split(" > ")[0])[1:] for line in lines if line.startswith("nlc ")]


@pytest.mark.parametrize("path", [p for p in sorted(ALL_COMMANDS) if p[0] in MINE], ids=" ".join)
def test_examples_name_real_files_and_options(path):
    examples = _examples(path)
    assert 2 <= len(examples) <= 3 or _is_group(ALL_COMMANDS[path])
    for args in examples:
        command, rest = ROOT_COMMAND, list(args)
        while _is_group(command):
            command = command.commands[rest.pop(0)]
        options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        for arg in rest:
            if arg.startswith("-"):
                assert arg.split("=")[0] in options, (args, arg)
            elif arg.startswith("specs/"):
                assert glob.glob(str(ROOT / arg)), (args, arg)


@pytest.mark.parametrize("verb", ["validate", "show", "graph"])
def test_spec_examples_run_as_written(verb, monkeypatch):
    monkeypatch.chdir(ROOT)
    for args in _examples((verb,)):
        args = [match for arg in args for match in (sorted(glob.glob(arg)) if "*" in arg else [arg])]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
