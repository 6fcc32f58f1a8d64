"""Validation equals capability (issue 12): the capability table (:mod:`nlc.capabilities`)
is what both the validator and the lowering read.

* every combination the table refuses is refused by :func:`nlc.validate` with the
  table's message, at the offending field's YAML file and line;
* every combination it accepts compiles at a tiny size (width 16, 2 heads, 16 tokens) and
  trains one forward + backward step with a finite loss and finite gradients.
"""
from __future__ import annotations

from itertools import groupby
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import nlc
from nlc.capabilities import (
    CMS_AXES,
    HOPE_PATTERN,
    Refusal,
    RuleCase,
    cms_init_refusals,
    memory_combinations,
)
from nlc.graph.validate import validate

TINY = ["model.width=16", "model.heads=2", "train.seq_len=16", "train.batch=2"]
MARK = "# <-"  # the line a refusal must point at


def spec_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def assert_refused(tmp_path: Path, text: str, path: str, fragment: str) -> None:
    """``text`` is refused with an error at dotted ``path`` whose message holds ``fragment``,
    located at the line marked ``# <-``."""
    file = spec_file(tmp_path, text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if MARK in t)
    spec, issues = validate(file)
    shown = [i.format() for i in issues]
    assert spec is None, shown
    hits = [i for i in issues if i.path == path and fragment in i.message and i.severity == "error"]
    assert hits, f"no {path}: ...{fragment}... in {shown}"
    assert (hits[0].file, hits[0].line) == (str(file), line), shown
    assert hits[0].format().startswith(f"{file}:{line}:") and hits[0].hint, shown


def train_step(source: str | Path, overrides: list[str] = ()) -> float:
    """The loss of one seeded forward + backward step of the compiled spec; asserts finite
    loss and gradients."""
    model = nlc.compile(source, overrides=[*TINY, *overrides], seed=0)
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    logits, _ = model(x, targets=x.roll(-1, 1))
    loss = F.cross_entropy(logits.flatten(0, 1), x.roll(-1, 1).flatten())
    loss.backward()
    assert torch.isfinite(loss), loss
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    return loss.item()


# ------------------------------------------------------------------ memory update rules

_PARAMS = {"lp": "p: 1.5", "huber": "delta: 1.0"}  # p > 2 needs a gradient guard (rule 10)
_RK = {"lq": "q: 3", "elastic": "shrink: 0.01", "kl": "mass: 4.0"}


def memory_level(name: str, case: RuleCase, mark: str = "") -> list[str]:
    """YAML lines of a memory level of ``case``, one field a line; ``mark``: the dotted field
    (relative to the level) whose line gets the marker."""
    fields = [
        ("memory.kind", f"memory: {{kind: {case.memory}}}"),
        ("objective", "objective:"),
        ("objective.kind", f"  kind: {case.objective}"),
        ("objective.window", f"  window: {case.window}"),
        ("objective.p", f"  {_PARAMS.get(case.objective, '')}"),
        ("update", "update:"),
        ("update.rule", f"  rule: {case.rule}"),
        ("update.lr", "  lr: 0.01"),
        ("update.momentum", "  momentum: 0.9" if case.momentum else ""),
        ("update.retention_kind", f"  retention_kind: {case.retention_kind}"),
        ("update.q", "  q: 2" if case.memory == "matrix" and case.retention_kind == "lq"  # rule 10: a zero
         else f"  {_RK.get(case.retention_kind, '')}"),  # start with q > 2 blows up
        (f"update.{case.guards}", f"  {case.guards}: 1.0" if case.guards else ""),
        ("update.output", f"  output: {case.output}" if case.output != "identity" else ""),
        ("chunk", "chunk: 8"),
        ("keys", "keys: {from: input, norm: l2}"),
        ("values", "values: {from: input, norm: l2}"),
        ("queries", "queries: {from: input, norm: l2}"),
    ]
    lines = [f"  {name}:", "    type: memory"]
    lines += [f"    {text}" + (f"  {MARK}" if field == mark else "") for field, text in fields if text.strip()]
    return lines


REFUSED_RULES = [(c, r) for c, r in memory_combinations() if isinstance(r, Refusal)]
ACCEPTED_RULES = [(c, r) for c, r in memory_combinations() if not isinstance(r, Refusal)]


def test_table_covers_every_primitive_family():
    assert {r for _, r in ACCEPTED_RULES} == {"linear_attention", "delta_rule", "dgd", "omega_rule",
                                              "deep_memory"}
    # 1024 combinations without a momentum knob (rule momentum: with one), and rule dgd again with one
    assert len(ACCEPTED_RULES) + len(REFUSED_RULES) == 1024 + 256
    assert all(isinstance(r, Refusal) for c, r in memory_combinations() if c.rule == "dgd" and c.momentum)


def test_every_refused_update_rule_is_refused_at_its_line(tmp_path):
    for case, refusal in REFUSED_RULES:
        text = "\n".join(["nlc: 1", "extends: linear_attention", "levels:",
                          *memory_level("linattn", case, mark=refusal.field)]) + "\n"
        assert_refused(tmp_path, text, f"levels.linattn.{refusal.field}", refusal.message)


def test_matrix_dgd_with_a_momentum_is_refused_at_the_momentum(tmp_path):
    """dgd takes a momentum only in HOPE's self-modifying memories; the matrix DGD primitive
    (NL-arXiv Eqs. 92-93) has none."""
    case = RuleCase("matrix", "l2", "dgd", 1, "l2", "", momentum=True)
    text = "\n".join(["nlc: 1", "extends: linear_attention", "levels:",
                      *memory_level("linattn", case, mark="update.momentum")]) + "\n"
    assert_refused(tmp_path, text, "levels.linattn.update.momentum", "the matrix DGD rule (NL-arXiv Eqs. 92-93) "
                   "has no momentum")
    without = "\n".join(line for line in text.splitlines() if "momentum" not in line) + "\n"
    assert train_step(spec_file(tmp_path, without)) > 0  # the same memory without it trains


def _group(case: RuleCase) -> tuple[str, str, str]:
    return case.memory, case.objective, case.rule


@pytest.mark.parametrize("group", [k for k, _ in groupby(ACCEPTED_RULES, key=lambda cr: _group(cr[0]))],
                         ids=lambda g: "-".join(map(str, g)))
def test_every_accepted_update_rule_trains(tmp_path, group):
    """One model per (memory, objective, rule): a layer for each accepted window,
    retention kind and guard."""
    cases = [c for c, _ in ACCEPTED_RULES if _group(c) == group]
    lines = ["nlc: 1", "extends: base/small.yaml", "levels:"]
    for i, case in enumerate(cases):
        lines += memory_level(f"m{i}", case)
    lines += ["model:", f"  blocks: [{{layers: [{', '.join(f'm{i}' for i in range(len(cases)))}]}}]"]
    train_step(spec_file(tmp_path, "\n".join(lines) + "\n"))


@pytest.mark.parametrize("degree", [1, 8])
def test_the_feature_map_trains_on_every_primitive_family(tmp_path, degree):
    """ATLAS' polynomial feature map is refused on no update rule: one layer per primitive family
    (and the Muon output) with the map of the lowest and highest degree trains finite."""
    cases = list({r if c.output == "identity" else c.output: c for c, r in ACCEPTED_RULES}.values())
    lines = ["nlc: 1", "extends: base/small.yaml", "levels:"]
    for i, case in enumerate(cases):
        lines += [*memory_level(f"m{i}", case), f"    features: {{kind: polynomial, degree: {degree}}}"]
    lines += ["model:", f"  blocks: [{{layers: [{', '.join(f'm{i}' for i in range(len(cases)))}]}}]"]
    assert len(cases) == 6
    train_step(spec_file(tmp_path, "\n".join(lines) + "\n"))


# ------------------------------------------------------------------ memory levels

@pytest.mark.parametrize("lines,path,fragment", [
    (["    period: 2", "    read: after_write  # <-"], "read", "read as it stood at its last tick"),
    (["    period: never  # <-"], "period", "period 'never' would make it a fixed random map"),
    (["    objective: {kind: dot, self_target: true}  # <-"], "objective.self_target",
     "only in HOPE's self-modifying pattern"),
    (["    init: {copy: other}  # <-"], "init", "copies another level's initial state"),
    (["    init: {kind: zero, reset: context}  # <-"], "init.reset", "nothing reads reset: context"),
    (["    init: {kind: learned, reset: slower_chunk}  # <-"], "init.reset", "nothing reads reset"),
])
def test_memory_level_refusals(tmp_path, lines, path, fragment):
    other = ["  other: {type: memory, memory: {kind: matrix}, objective: {kind: dot}, init: zero}"]
    text = "\n".join(["nlc: 1", "extends: linear_attention", "levels:", "  linattn:", *lines, *other,
                      "model:", "  blocks: [{layers: [linattn, other, mlp]}]"]) + "\n"
    assert_refused(tmp_path, text, f"levels.linattn.{path}", fragment)


# ------------------------------------------------------------------ CMS (mlp) levels

def cms_level(lines: list[str]) -> list[str]:
    """A task-driven CMS level 'cms' with ``lines`` in place of its objective or update."""
    given = " ".join(lines)
    return ["  cms:", "    type: mlp", "    period: 4", *lines,
            *(["    objective: {kind: task}"] if "objective:" not in given else []),
            *(["    update: {rule: gd, lr: 0.01}"] if "update:" not in given else [])]


@pytest.mark.parametrize("lines,path,fragment", [
    (["    objective: {kind: dot}  # <-"], "objective.kind", "not 'dot'"),
    (["    objective: {kind: lp, p: 3}  # <-"], "objective.kind", "not 'lp'"),
    (["    objective: {kind: huber, delta: 1.0}  # <-"], "objective.kind", "not 'huber'"),
    (["    objective: {kind: l2, window: 2}  # <-"], "objective.window", "no window"),
    (["    objective: {kind: l2, self_target: true}  # <-"], "objective.self_target", "no window"),
    (["    update: {rule: momentum, momentum: 0.9}  # <-"], "update.rule", "not 'momentum'"),
    (["    update:", "      retention: 0.9  # <-"], "update.retention", "takes no retention"),
    (["    update:", "      forget: 0.1  # <-"], "update.retention", "takes no retention"),
    (["    update:", "      weight_decay: 0.1  # <-"], "update.weight_decay", "takes no weight_decay"),
    (["    update:", "      retention_kind: lq  # <-", "      q: 3"], "update.retention_kind",
     "takes no retention_kind"),
    (["    update:", "      grad_clip: 1.0  # <-"], "update.grad_clip", "takes no grad_clip"),
    (["    update:", "      grad_normalize: true  # <-"], "update.grad_normalize", "takes no grad_normalize"),
    (["    update:", "      output: newton_schulz  # <-"], "update.output", "takes no output"),
    (["    update:", "      lr: {from: linattn, init: 0.005, max: 0.01}  # <-"], "update.lr.from",
     "not from level 'linattn'"),
    (["    update:", "      lr: {from: input, init: 0.005, max: 0.01, per: chunk}  # <-"], "update.lr.per",
     "changes every token"),
    (["    update:", "      lr:", "        learned: 2.0  # <-"], "update.lr.learned",  # one knob: max * sigmoid
     "the lr knob is 1.0 * sigmoid(.): it starts strictly inside (0, 1.0), not at 2.0"),
    (["    flush: drop  # <-"], "flush", "flush: drop is not applied"),
    (["    flush: flush  # <-"], "flush", "flush: flush is not applied"),
    (["    init: {copy: cms2}  # <-"], "init", "copies another level's initial state"),
])
def test_cms_level_refusals(tmp_path, lines, path, fragment):
    cms2 = ["  cms2: {type: mlp, period: 4, objective: {kind: task}, update: {rule: gd, lr: 0.01}}"]
    text = "\n".join(["nlc: 1", "extends: linear_attention", "levels:", *cms_level(lines), *cms2,
                      "model:", "  blocks: [{layers: [linattn, cms, cms2]}]"]) + "\n"
    assert_refused(tmp_path, text, f"levels.cms.{path}", fragment)


@pytest.mark.parametrize("lines,path,fragment", [
    (["  mlp:", "    init: zero  # <-"], "levels.mlp.init", "no in-context state"),
    (["  mlp:", "    flush: drop  # <-"], "levels.mlp.flush", "no pending updates"),
    (["  cms_fast:", "    init: {from: cms_mid, reset: never}  # <-"], "levels.cms_fast.init.reset",
     "reset: never is not implemented"),
    (["  cms_fast:", "    init: {from: cms_mid, reset: context}  # <-"], "levels.cms_fast.init.reset",
     "reset: context is not implemented"),
])
def test_initial_state_refusals(tmp_path, lines, path, fragment):
    base = "linear_attention" if "mlp" in path else "cms_nested"
    assert_refused(tmp_path, "\n".join(["nlc: 1", f"extends: {base}", "levels:", *lines]) + "\n",
                   path, fragment)


# small enough for an l2 CMS level (lr x period x width < 0.25: validation rule 10)
_LR = {"constant": "0.001", "learned": "{learned: 0.001}", "data": "{from: input, init: 0.0005, max: 0.001}"}


@pytest.mark.parametrize("objective", [o for o in CMS_AXES["objective"] if o in ("task", "l2")])
@pytest.mark.parametrize("lr", CMS_AXES["lr_kind"])
@pytest.mark.parametrize("init", [i for i in CMS_AXES["init"] if not cms_init_refusals(i)])
def test_every_accepted_cms_level_trains(tmp_path, objective, lr, init):
    """objective x lr x init; a nested initial state (``from``) is task-driven only (rule 9)."""
    if init == "from" and objective != "task":
        pytest.skip("nested initial states belong to task-driven CMS levels (validation rule 9)")
    level = (f"{{type: mlp, period: %d, objective: {{kind: {objective}}}, "
             f"update: {{rule: gd, lr: {_LR[lr]}}}%s}}")
    nested = init == "from"
    lines = ["nlc: 1", "extends: linear_attention", "levels:",
             f"  cms: {level % (2, ', init: {from: slow, reset: slower_chunk}' if nested else f', init: {init}')}"]
    layers = "linattn, mlp, cms"
    if nested:
        lines.append(f"  slow: {level % (4, '')}")
        layers += ", slow"
    lines += ["model:", f"  blocks: [{{repeat: 2, layers: [{layers}]}}]"]
    train_step(spec_file(tmp_path, "\n".join(lines) + "\n"))


# ------------------------------------------------------------------ HOPE coupling

HOPE = """\
nlc: 1
extends: base/small.yaml
levels:
  mem_k: &c
    type: memory
    memory: {kind: mlp, depth: 2, expansion: 2, residual: true}
    objective: {kind: l2, self_target: true}
    update: {rule: dgd, lr: {from: mem_lr, init: 0.05, max: 0.5}, retention: {from: mem_alpha, init: 0.99}}
    chunk: 4
    keys: mem_k
    values: mem_v
    queries: {from: input, project: false, norm: l2}
  mem_v: *c
  mem_lr: *c
  mem_alpha: *c
  memory:
    type: memory
    memory: {kind: mlp, depth: 2, expansion: 2, residual: true}
    objective: {kind: l2, self_target: true}
    update: {rule: dgd, lr: {from: mem_lr, init: 0.05, max: 0.5}, retention: {from: mem_alpha, init: 0.99}}
    chunk: 8
    keys: {from: mem_k, norm: l2}
    values: mem_v
    queries: {from: input, conv: 4, norm: l2}
  attn: {type: attention}
model:
  blocks: [{layers: [memory, attn]}]
"""


def test_hope_pattern_trains():
    assert train_step(HOPE) > 0
    assert train_step(HOPE, ["levels.memory.output_gate=true"]) > 0


def test_hope_with_adaptive_queries_trains():
    """HOPE's adaptive q (NL-arXiv Table 6): the queries come from a fifth component memory."""
    text = HOPE.replace("  mem_alpha: *c\n", "  mem_alpha: *c\n  mem_q: *c\n").replace(
        "    queries: {from: input, conv: 4, norm: l2}", "    queries: {from: mem_q, norm: l2}")
    assert train_step(text) > 0
    model = nlc.compile(text, overrides=TINY, seed=0)
    static = nlc.compile(HOPE, overrides=TINY, seed=0)
    layer = getattr(model, model.LAYERS[0]).mixer
    assert layer.sources is None and getattr(static, static.LAYERS[0]).mixer.sources is not None
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    logits, _ = model(x)
    grads = torch.autograd.grad(logits.square().sum(), model.parameters_by_level()["mem_q"])
    assert all(g.abs().sum() > 0 for g in grads)  # the queries the main memory reads come from mem_q
    with torch.no_grad():
        for p in model.parameters_by_level()["mem_q"]:
            p.mul_(1.5)
    assert not torch.allclose(model(x)[0], logits)


def hope_with(old: str, new: str) -> str:
    """HOPE with the last occurrence of ``old`` replaced (the main memory's, where both have it)."""
    assert old in HOPE
    head, _, tail = HOPE.rpartition(old)
    return head + new + tail


@pytest.mark.parametrize("old,new,path,fragment", [
    ("    queries: {from: input, conv: 4, norm: l2}", "    queries: mem_k  # <-",
     "levels.memory.queries.from", "which already gives its keys"),
    ("    queries: {from: input, conv: 4, norm: l2}", "    queries: memory  # <-",
     "levels.memory.queries.from", "'memory' reads its own output"),
    ("    queries: {from: input, conv: 4, norm: l2}", "    queries: {from: mem_q, conv: 4, norm: l2}  # <-",
     "levels.memory.queries", "uses the queries its component generates as they are"),
    ("    values: mem_v\n    queries: {from: input, conv", "    values: mem_k  # <-\n    queries: {from: input, conv",
     "levels.memory.values.from", "which already gives its keys"),
    ("    values: mem_v\n    queries: {from: input, conv", "    values: {from: mem_v, norm: l2}  # <-\n"
     "    queries: {from: input, conv", "levels.memory.values", "as they are"),
    ("  mem_v: *c", "  mem_v: {<<: *c, output_gate: true}  # <-", "levels.mem_v.output_gate", "no output projection"),
    ("  mem_v: *c", "  mem_v: {<<: *c, chunk: 2}  # <-", "levels.mem_v.chunk", "share one chunk"),
    ("  mem_v: *c", "  mem_v: {<<: *c, read: after_write}  # <-", "levels.mem_v.read", "a read before its write"),
    ("  mem_v: *c", "  mem_v: {<<: *c, init: zero}  # <-", "levels.mem_v.init", "a learned initial state"),
    ("  mem_v: *c", "  mem_v: {<<: *c, heads: 1}  # <-", "levels.mem_v.heads", "heads, hidden width"),
    ("  mem_v: *c", "  mem_v: {<<: *c, queries: {from: input, norm: l2}}  # <-", "levels.mem_v.queries",
     "unprojected"),
    ("  mem_v: *c", "  mem_v: {<<: *c, keys: {from: mem_k, norm: l2}}  # <-", "levels.mem_v.keys",
     "options on them are not applied"),
    ("  mem_v: *c", "  mem_v: {<<: *c, memory: {kind: mlp, depth: 3, expansion: 2, residual: true}}  # <-",
     "levels.mem_v.memory.kind", "a residual depth-2 MLP memory"),
    ("  mem_v: *c", "  mem_v: {<<: *c, update: {rule: dgd, lr: {from: mem_lr, init: 0.1, max: 0.5}, "
     "retention: {from: mem_alpha, init: 0.99}}}  # <-", "levels.mem_v.update", "the update block of 'memory'"),
    ("  mem_v: *c", "  mem_v: {<<: *c, values: mem_k}  # <-", "levels.mem_v.values.from",
     "from the same memories"),
    ("    chunk: 8", "    chunk: 8\n    read: after_write  # <-", "levels.memory.read", "a read before its write"),
    ("    objective: {kind: l2, self_target: true}", "    objective: {kind: l2, self_target: true, window: 2}  # <-",
     "levels.memory.objective", "objective l2 with self_target and no window"),
    ("    chunk: 8", "    chunk: 8\n    period: 2  # <-", "levels.memory.period", "memories update every token"),
    ("    chunk: 8", "    chunk: 8\n    features: {kind: polynomial, degree: 2}  # <-", "levels.memory.features",
     "no feature map on its keys and queries"),
    ("  mem_v: *c", "  mem_v: {<<: *c, features: {kind: polynomial, degree: 2}}  # <-", "levels.mem_v.features",
     "no feature map on its keys and queries"),
    ("retention: {from: mem_alpha, init: 0.99}}\n    chunk: 8",
     "retention: {from: mem_alpha, init: 0.99}, output: newton_schulz}  # <-\n    chunk: 8",
     "levels.memory.update.output", "no Newton-Schulz output"),
    ("  attn: {type: attention}", "  attn: {type: attention}\n  lin: {type: memory, objective: {kind: dot}, "
     "update: {lr: {from: mem_lr}}}  # <-\n", "levels.lin.update.lr.from",
     "'lin' reads level 'mem_lr', and a memory reads other memories only as HOPE's self-modifying memory"),
    ("retention: {from: mem_alpha, init: 0.99}}\n    chunk: 8",
     "retention: {from: mem_alpha, init: 0.99}, momentum: {from: mem_k, init: 0.5}}  # <-\n    chunk: 8",
     "levels.memory.update.momentum.from", "no component generates the momentum of 'memory'"),
    ("retention: {from: mem_alpha, init: 0.99}}\n    chunk: 8",
     "retention: {from: mem_alpha, init: 0.99}, momentum: {from: input, init: 0.5, per: chunk}}  # <-\n"
     "    chunk: 8", "levels.memory.update.momentum.per", "per-token lr, retention and momentum"),
    ("  mem_v: *c", "  mem_v: {<<: *c, queries: {from: input, project: false, conv: 4, norm: l2}}  # <-",
     "levels.mem_v.queries", "the same for all"),
])
def test_hope_coupling_refusals(tmp_path, old, new, path, fragment):
    text = hope_with(old, new)
    if "mem_q" in new:  # adaptive q: a fifth component, like mem_k
        text = text.replace("  mem_alpha: *c\n", "  mem_alpha: *c\n  mem_q: *c\n")
    if "lin:" in new:  # a plain memory that takes one knob from another memory
        text = text.replace("layers: [memory, attn]", "layers: [memory, attn, lin]")
    assert_refused(tmp_path, text, path, fragment)


def test_hope_refusal_hints_name_the_pattern(tmp_path):
    file = spec_file(tmp_path, hope_with("  mem_v: *c", "  mem_v: {<<: *c, values: mem_k}"))
    _, issues = validate(file)
    assert [i.hint for i in issues if i.path == "levels.mem_v.values.from"] == [HOPE_PATTERN]


def test_hope_forget_gate_and_retention_max_refused(tmp_path):
    update = "    update: {rule: dgd, lr: {from: mem_lr, init: 0.05, max: 0.5}, retention: {from: mem_alpha, init: 0.99}}"
    text = hope_with(update, update.replace("retention: {from: mem_alpha, init: 0.99}",
                                            "forget: {from: mem_alpha, init: 0.01}") + "  # <-")
    assert_refused(tmp_path, text, "levels.memory.update.forget", "not a forget gate")
    text = hope_with(update, update.replace("init: 0.99}", "init: 0.4, max: 0.5}") + "  # <-")
    assert_refused(tmp_path, text, "levels.memory.update.retention.max", "in (0, 1)")


def test_hope_memory_in_a_context_layer_refused(tmp_path):
    text = HOPE.replace("  blocks: [{layers: [memory, attn]}]",
                        "  blocks:\n    - layers:\n        - context: {attention: attn, memory: memory}  # <-")
    assert_refused(tmp_path, text, "model.blocks.0.layers.0.context.memory", "self-modifying (HOPE) memory")


def test_a_nested_state_from_a_frozen_mlp_is_refused_at_its_init(tmp_path):
    """Fuzz finding: ``init: {from: X}`` with X a Transformer MLP (period never) validated and
    then failed in ``state_from`` (X has no in-context state)."""
    text = """nlc: 1
levels:
  attn: {type: attention}
  fast: {type: mlp, period: 16, objective: {kind: task}, update: {rule: gd, lr: 0.001}, init: {from: slow}}  # <-
  slow: {type: mlp}
  outer: {type: optimizer}
model: {width: 32, blocks: [{layers: [attn, fast, slow]}]}
"""
    assert_refused(tmp_path, text, "levels.fast.init", "'slow' has no in-context state")
