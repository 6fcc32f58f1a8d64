"""The level graph as text: a per-level table, Mermaid and Graphviz DOT (no graphviz needed).

* :func:`to_table` - a ``rich`` table, one row per level: type, ordered level (0 = fastest),
  update frequency, period, chunk, instances, parameters and per-sequence state (floats,
  see :mod:`nlc.graph.sizes`) and the outer optimizer that trains it;
  :func:`table_rows` gives the same rows as plain dicts.
* :func:`to_mermaid` / :func:`to_dot` - one subgraph (cluster) per ordered level, fastest at
  the top; solid arrows for same-time edges, dotted for lagged ones, labelled by kind.
"""
from __future__ import annotations

from typing import Any

from ..spec.levels import AttentionLevel, MemoryLevel, MLPLevel, OptimizerLevel
from ..spec.model import Spec
from .build import build_graph, ordered_levels, outer_of, outermost
from .sizes import level_sizes, model_params


def frequency_text(spec: Spec, name: str) -> str:
    """How often a level changes, for people: ``∞``, ``every 16 tokens``, ``never in context``..."""
    level = spec.levels[name]
    if isinstance(level, AttentionLevel):
        return "∞"
    if isinstance(level, OptimizerLevel):
        k = level.period.steps
        return "every optimizer step" if k == 1 else f"every {k} optimizer steps"
    period = getattr(level, "period", None)
    if period is not None and period.tokens is not None:
        return "every token" if period.tokens == 1 else f"every {period.tokens} tokens"
    return "never in context"


def period_text(spec: Spec, name: str) -> str:
    period = getattr(spec.levels[name], "period", None)
    if period is None:
        return "token" if isinstance(spec.levels[name], AttentionLevel) else "never"
    if period.tokens is not None:
        return str(period.tokens)
    return "never" if period.never else f"{period.steps} step" + ("s" if period.steps != 1 else "")


def chunk_text(spec: Spec, name: str) -> str:
    level = spec.levels[name]
    if isinstance(level, MemoryLevel):
        return str(level.chunk)
    if isinstance(level, MLPLevel) and level.period.tokens is not None:
        return str(level.period.tokens)  # a CMS level's gradients are frozen for a whole period
    return "-"


def _order_titles(spec: Spec) -> list[tuple[int, list[str], str]]:
    """``(index, levels, frequency)`` per ordered level; a group holding an optimizer is
    named by the optimizer's clock (its frozen levels move with it)."""
    out = []
    for i, group in enumerate(ordered_levels(spec)):
        lead = next((n for n in group if isinstance(spec.levels[n], OptimizerLevel)), group[0])
        out.append((i, group, frequency_text(spec, lead)))
    return out


def table_rows(spec: Spec) -> list[dict[str, Any]]:
    """One dict per level, in ordered-level order (fastest first)."""
    graph = build_graph(spec)
    sizes = level_sizes(spec, graph)
    slowest = outermost(spec)
    rows = []
    for order, group, _ in _order_titles(spec):
        for name in group:
            level, size = spec.levels[name], sizes[name]
            optimizer = isinstance(level, OptimizerLevel)
            rows.append({
                "level": name, "type": level.type, "order": order,
                "frequency": frequency_text(spec, name), "period": period_text(spec, name),
                "chunk": chunk_text(spec, name), "instances": size.instances,
                "params": size.total_params, "state": size.total_state,
                "outer": ("(outermost)" if name in slowest else "-") if optimizer
                else (outer_of(spec, name) or "-"),
            })
    return rows


def _n(value: int) -> str:
    return f"{value:,}"


def to_table(spec: Spec) -> Any:
    """A ``rich.table.Table`` of the levels; the caption sums parameters and state."""
    from rich.table import Table  # lazy: keeps CLI startup free of rich

    rows = table_rows(spec)
    table = Table(title=f"levels of {spec.name or 'spec'}", title_justify="left")
    for header, justify in (("level", "left"), ("type", "left"), ("order", "right"),
                            ("frequency", "left"), ("period", "right"), ("chunk", "right"),
                            ("×", "right"), ("params", "right"), ("state/seq", "right"),
                            ("outer", "left")):
        table.add_column(header, justify=justify, no_wrap=True)
    for r in rows:
        table.add_row(r["level"], r["type"], str(r["order"]), r["frequency"], r["period"], r["chunk"],
                      str(r["instances"]), _n(r["params"]), _n(r["state"]), r["outer"])
    rest = model_params(spec)
    levels_total = sum(r["params"] for r in rows)
    table.caption = (
        f"params: {_n(levels_total + sum(rest.values()))} = levels {_n(levels_total)} + embedding "
        f"{_n(rest['embedding'])} + head {_n(rest['head'])} + norms {_n(rest['norms'])} + combine "
        f"{_n(rest['combine'])}; state per sequence: {_n(sum(r['state'] for r in rows))} floats "
        "(× = instances across repeated blocks; params and state are totals over them)"
    )
    table.caption_justify = "left"
    return table


def _edges(spec: Spec) -> list[tuple[str, str, str, bool]]:
    """Distinct ``(source, target, kind, same_time)`` edges of the level graph."""
    seen: dict[tuple, None] = {}
    for a, b, data in build_graph(spec).edges(data=True):
        seen.setdefault((a, b, data["kind"], bool(data["same_time"])), None)
    return list(seen)


def to_mermaid(spec: Spec) -> str:
    """A Mermaid flowchart (renders on GitHub inside a ```mermaid block)."""
    lines = ["flowchart TB"]
    titles = _order_titles(spec)
    for order, group, freq in titles:
        lines.append(f'  subgraph L{order}["level {order} · {freq}"]')
        lines += [f'    n_{name}["{name}<br/>{spec.levels[name].type}"]' for name in group]
        lines.append("  end")
    lines += [f"  L{i} ~~~ L{i + 1}" for i in range(len(titles) - 1)]  # keep fastest on top
    for a, b, kind, same_time in _edges(spec):
        arrow = "-->" if same_time else "-.->"
        lines.append(f"  n_{a} {arrow}|{kind}| n_{b}")
    return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'


def to_dot(spec: Spec) -> str:
    """Graphviz DOT text (``dot -Tsvg``): one cluster per ordered level."""
    lines = [f"digraph {_q(spec.name or 'nlc')} {{", "  rankdir=TB;", "  compound=true;",
             '  node [shape=box, style=rounded, fontname="Helvetica"];',
             '  edge [fontname="Helvetica", fontsize=10];']
    titles = _order_titles(spec)
    for order, group, freq in titles:
        lines.append(f"  subgraph cluster_L{order} {{")
        lines.append(f"    label={_q(f'level {order} · {freq}')};")
        lines += [f'    {_q(name)} [label="{name}\\n{spec.levels[name].type}"];' for name in group]
        lines.append("  }")
    for (_, upper, _), (_, lower, _) in zip(titles, titles[1:]):  # keep fastest on top
        lines.append(f"  {_q(upper[0])} -> {_q(lower[0])} [style=invis];")
    for a, b, kind, same_time in _edges(spec):
        style = "solid" if same_time else "dotted"
        lines.append(f"  {_q(a)} -> {_q(b)} [label={_q(kind)}, style={style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
