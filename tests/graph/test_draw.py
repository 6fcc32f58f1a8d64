"""Level table, Mermaid and DOT output; parameter and state counts against hand computation."""
from __future__ import annotations

import re

import pytest

from nlc.graph import draw, sizes
from nlc.spec import Spec
from nlc.graph.validate import load_spec
from nlc.spec.load import load_raw

TINY = """
nlc: 1
name: tiny
levels:
  attn: {type: attention, qk_norm: true, window: 8, persistent: persist}
  persist: {type: persistent, tokens: 4}
  mem:
    type: memory
    memory: {kind: mlp, depth: 3, hidden: 8}
    update: {rule: momentum, lr: {learned: 0.1}, momentum: {from: input, init: 0.9}, retention: 0.99}
    heads: 2
    chunk: 4
    queries: {from: input, conv: 3}
    values: gen
    output_gate: true
  gen: {type: memory, chunk: 4, read: after_write}   # reached only through mem's values
  mlp: {type: mlp, hidden: 32, activation: gelu}
  cms:
    type: mlp
    period: 4
    expansion: 2
    objective: {kind: task}
    update: {rule: momentum, lr: {from: input}, momentum: 0.9}
  outer: {type: optimizer}
model:
  width: 16
  heads: 4
  tie_embeddings: false
  blocks:
    - repeat: 3
      layers: [attn, mem, mlp]
    - layers: [{parallel: [cms, mlp], combine: learned}]
train: {seq_len: 32}
"""

D = 16


@pytest.fixture(scope="module")
def tiny():
    """Schema-valid, not buildable: the counts and drawings only need the schema, and they
    cover a memory reading another memory's output and a momentum CMS, which validation
    refuses (the capability table, rule 8)."""
    return Spec.model_validate(load_raw(TINY).data)


def test_per_instance_params_and_state(tiny):
    # attention: Wq Wk Wv Wo + qk-norm gains (d = 16/4); KV cache of a window of 8 tokens
    assert sizes.level_params_and_state(tiny, "attn") == (4 * D * D + 2 * 4, 2 * D * 8)
    assert sizes.level_params_and_state(tiny, "persist") == (4 * D, 0)
    # mem: 2 heads of d = 8, MLP 8 -> 8 -> 8 -> 8 (depth 3, hidden 8)
    weights = 2 * (8 * 8 + 8 * 8 + 8 * 8)
    params = (D * D + D * D  # keys and queries projected from the input (values come from gen)
              + 3 * D  # the short conv on the queries
              + 2 * D * D  # output map + output gate
              + 2  # lr learned per head
              + (D * 2 + 2)  # momentum from the input: D -> H projection with bias
              + weights)  # learned initial state
    state = 2 * weights + (3 - 1) * D  # momentum buffer doubles the memory; conv history
    assert sizes.level_params_and_state(tiny, "mem") == (params, state)
    # gen: 4 heads of a 4x4 matrix, all of k, v, q projected from the input; it only feeds
    # 'mem' (no layer applies it), so it has no output map
    assert sizes.level_params_and_state(tiny, "gen") == (3 * D * D + 4 * 16, 4 * 16)
    assert sizes.level_params_and_state(tiny, "mlp") == (2 * D * 32, 0)  # gelu: two matrices
    cms = 3 * D * 32  # swiglu, hidden = 2 * 16: three matrices
    assert sizes.level_params_and_state(tiny, "cms") == (cms + D + 1, 2 * cms)  # lr from input; momentum
    assert sizes.level_params_and_state(tiny, "outer") == (0, 0)


def test_instances_follow_repeat_and_references(tiny):
    copies = {n: s.instances for n, s in sizes.level_sizes(tiny).items()}
    # block 0 repeats 3 times: attn, mem, mlp directly, persist and gen through references;
    # mlp is also used once more in block 1, cms only there
    assert copies == {"attn": 3, "persist": 3, "mem": 3, "gen": 3, "mlp": 4, "cms": 1, "outer": 1}


def test_model_params_and_total(tiny):
    rest = sizes.model_params(tiny)
    assert rest == {"embedding": 256 * D, "head": 256 * D,
                    "norms": D + 3 * 3 * D + D,  # final + 3 layers x 3 repeats + the parallel layer
                    "combine": 2}
    levels = sum(s.total_params for s in sizes.level_sizes(tiny).values())
    assert levels == 3 * 1032 + 3 * 64 + 3 * 1492 + 3 * 832 + 4 * 1024 + 1553
    assert sizes.total_params(tiny) == levels + sum(rest.values())


def test_swiglu_default_hidden_and_matrix_memory():
    spec = load_spec("""
nlc: 1
levels:
  m: {type: memory, keys: {from: input, conv: 4}, update: {lr: 0.1}}
  f: {type: mlp}
  o: {type: optimizer}
model: {width: 32, heads: 2, blocks: [{layers: [m, f]}]}
""")
    # matrix memory per head (d = 16); keys conv 4 -> 3 inputs of history
    assert sizes.level_params_and_state(spec, "m") == (3 * 32 * 32 + 4 * 32 + 32 * 32 + 2 * 16 * 16,
                                                       2 * 16 * 16 + 3 * 32)
    assert sizes.level_params_and_state(spec, "f") == (3 * 32 * 128, 0)  # expansion 4, 3 matrices


def test_table_rows(tiny):
    rows = {r["level"]: r for r in draw.table_rows(tiny)}
    assert [r["level"] for r in draw.table_rows(tiny)][:1] == ["attn"]  # fastest first
    assert {n: r["order"] for n, r in rows.items()} == {
        "attn": 0, "mem": 1, "gen": 1, "cms": 2, "persist": 3, "mlp": 3, "outer": 3}
    assert rows["attn"]["frequency"] == "∞"
    assert rows["mem"]["frequency"] == "every token"
    assert rows["cms"]["frequency"] == "every 4 tokens"
    assert rows["mlp"]["frequency"] == rows["persist"]["frequency"] == "never in context"
    assert rows["outer"]["frequency"] == "every optimizer step"
    assert rows["cms"]["chunk"] == "4" and rows["mem"]["chunk"] == "4" and rows["attn"]["chunk"] == "-"
    assert rows["mlp"]["period"] == "never" and rows["outer"]["period"] == "1 step"
    assert rows["mem"]["params"] == 3 * 1492 and rows["mem"]["state"] == 3 * (2 * 384 + 32)
    assert rows["mem"]["outer"] == "outer" and rows["outer"]["outer"] == "(outermost)"
    slow = Spec.model_validate(load_raw(TINY, ["levels.outer.period={steps: 4}"]).data)
    assert {r["level"]: r["frequency"] for r in draw.table_rows(slow)}["outer"] == "every 4 optimizer steps"


def test_rich_table_renders_every_level(tiny):
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(draw.to_table(tiny))
    text = console.export_text()
    for name in tiny.levels:
        assert re.search(rf"\b{name}\b", text)
    assert f"{sizes.total_params(tiny):,}" in text
    assert "every 4 tokens" in text and "∞" in text


def test_mermaid(tiny):
    text = draw.to_mermaid(tiny)
    assert text.startswith("flowchart TB\n")
    titles = re.findall(r'subgraph (L\d+)\["level (\d+) · ([^"]+)"\]', text)
    assert [(t[0], t[2]) for t in titles] == [("L0", "∞"), ("L1", "every token"), ("L2", "every 4 tokens"),
                                              ("L3", "every optimizer step")]
    assert text.count("\n  end\n") == 4
    for name in tiny.levels:
        assert f'n_{name}["{name}<br/>' in text
    assert "n_gen -->|generation| n_mem" in text  # gen is read after its write: same time
    assert "n_persist -.->|conditioning| n_attn" in text  # lagged
    assert "n_outer -.->|initialization| n_mem" in text
    # the fastest level's subgraph comes first and the chain of invisible links keeps it on top
    assert text.index("subgraph L0") < text.index("subgraph L3") and "L2 ~~~ L3" in text


def test_dot(tiny):
    text = draw.to_dot(tiny)
    assert text.startswith('digraph "tiny" {') and text.rstrip().endswith("}")
    assert len(re.findall(r"subgraph cluster_L\d+ \{", text)) == 4
    for name in tiny.levels:
        assert f'"{name}" [label="{name}\\n{tiny.levels[name].type}"];' in text
    assert '"gen" -> "mem" [label="generation", style=solid];' in text
    assert '"persist" -> "attn" [label="conditioning", style=dotted];' in text
    assert text.count("{") == text.count("}")


def test_every_bundled_spec_draws():
    from nlc.spec.load import bundled_specs

    for name, path in bundled_specs().items():
        if name.startswith("base/"):
            continue
        spec = load_spec(path)
        assert len(draw.table_rows(spec)) == len(spec.levels)
        assert draw.to_mermaid(spec).count("subgraph ") == len(draw.ordered_levels(spec))
        assert draw.to_dot(spec).count("subgraph cluster_") == len(draw.ordered_levels(spec))


BUNDLED = sorted(p for d in ("specs", "specs/ablations") for p in __import__("glob").glob(f"{d}/*.yaml"))


@pytest.mark.parametrize("path", BUNDLED)
def test_the_count_from_the_spec_is_the_compiled_models(path):
    """nlc.graph.sizes counts every bundled spec's parameters as the compiled model has them
    (HOPE's shared component conv and static roles once, TTT's norm, Yaad's delta read-out,
    ATLAS' coefficients), at a small width."""
    import nlc
    spec = load_spec(path, ["model.width=32"])
    model = nlc.compile(spec)
    assert sizes.total_params(spec) == sum(p.numel() for p in model.parameters())
