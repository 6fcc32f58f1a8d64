"""Does the paper's ordering reproduce? Every pair of models the paper orders, per column.

The claims (:func:`paper_pairs`): NL-arXiv Table 2 orders HOPE > Titans (LMM) > Samba* >
Transformer++ (every pair of that chain is a claim), and Table 6 / Fig. 7 put HOPE ahead of
its ablations. For each claim and each main column of the summary, every (ahead, behind)
pair gets the pairwise order of :func:`.aggregate.order` (medians with diverged seeds at the
worst value, against the spread of both models):

* **agree**: ordered, and the paper's first model is ahead;
* **reversed**: ordered, and the paper's first model is behind;
* **unresolved**: not ordered (one seed, a difference within the spread, or both medians at
  the worst value): this run does not decide the pair;

a pair in which a model has no value in the column is not counted (``missing``). Nothing
here is a judgement typed by hand: the counts and the numbers come from the summary.
"""
from __future__ import annotations

from dataclasses import dataclass

from .aggregate import Stat, format_value, order

PAPER_ORDER = ("HOPE", "Titans (LMM)", "Samba*", "Transformer++")   # NL-arXiv Table 2, best first
ABLATION_ORDER = (("HOPE", "HOPE w/o CMS"), ("HOPE", "HOPE, 1-level CMS"))  # NL-arXiv Table 6, Fig. 7
VERDICTS = ("agree", "reversed", "unresolved")


@dataclass(frozen=True)
class PairCheck:
    """One claimed pair in one column: the paper puts ``ahead`` before ``behind``."""

    ahead: str
    behind: str
    verdict: str            # one of VERDICTS, or "missing"
    reason: str | None      # why unresolved (:mod:`.aggregate`'s reasons)
    text: str               # both models' medians and spreads


@dataclass(frozen=True)
class ColumnCheck:
    key: str
    title: str
    pairs: tuple[PairCheck, ...]

    def of(self, verdict: str) -> list[PairCheck]:
        return [p for p in self.pairs if p.verdict == verdict]

    def counts(self) -> dict[str, int]:
        return {verdict: len(self.of(verdict)) for verdict in VERDICTS}


def paper_pairs(models) -> dict[str, list[tuple[str, str]]]:
    """The orderings the paper claims, as (ahead, behind) pairs of the models present."""
    main = [m for m in PAPER_ORDER if m in models]
    pairs = {"HOPE > Titans > Samba > Transformer": [(a, b) for i, a in enumerate(main) for b in main[i + 1:]]}
    ablations = [(ahead, behind) for ahead, behind in ABLATION_ORDER if ahead in models and behind in models]
    if ablations:
        pairs["HOPE > its ablations"] = ablations
    return pairs


def _described(label: str, stat: Stat, metric: dict) -> str:
    """``label M`` (the median), with ``± s`` (the spread) where there are two seeds or more."""
    digits, percent = metric.get("digits", 3), metric["percent"]
    text = f"{label} {format_value(stat.median, digits, percent)}"
    return text + (f" ± {format_value(stat.spread, digits, percent)}" if stat.seeds > 1 and stat.n > 1 else "")


def check_pair(ahead: str, behind: str, summary: dict, key: str) -> PairCheck:
    """The paper's claim ``ahead`` > ``behind`` against column ``key`` of the summary."""
    metric = summary["metrics"][key]
    a, b = (Stat.from_json(metric["stats"][m]) for m in (ahead, behind))
    found = order(a, b, metric["higher_is_better"])
    verdict = {"ahead": "agree", "behind": "reversed"}.get(found.verdict, found.verdict)
    return PairCheck(ahead, behind, verdict, found.reason,
                     f"{_described(ahead, a, metric)} vs {_described(behind, b, metric)}")


def check_claims(summary: dict, models) -> dict[str, list[ColumnCheck]]:
    """Per claim, one :class:`ColumnCheck` per main column of ``summary``."""
    return {claim: [ColumnCheck(key, summary["metrics"][key]["title"],
                                tuple(check_pair(a, b, summary, key) for a, b in pairs))
                    for key in summary["main_columns"]]
            for claim, pairs in paper_pairs(models).items()}


def _verdict(column: ColumnCheck, summary: dict) -> str:
    counts = column.counts()
    compared = sum(counts.values())
    if not compared:
        return "cannot be checked (no values)."
    text = ", ".join(f"{counts[v]} {v}" for v in VERDICTS) + f" (of {compared} pairs)"
    medians = {Stat.from_json(summary["metrics"][column.key]["stats"][m]).median
               for p in column.pairs if p.verdict != "missing" for m in (p.ahead, p.behind)}
    if len(medians) == 1:
        metric = summary["metrics"][column.key]
        value = format_value(medians.pop(), metric.get("digits", 3), metric["percent"])
        return text + f": every model's median is {value}."
    for verdict in VERDICTS:
        pairs = column.of(verdict)
        if pairs:
            text += f"; {verdict}: " + "; ".join(
                p.text + (f" ({p.reason})" if p.reason else "") for p in pairs)
    return text + "."


def ordering_lines(summary: dict, models) -> list[str]:
    """The report's section body: per claim, a line per column and the totals."""
    lines = []
    for claim, columns in check_claims(summary, models).items():
        lines += [f"*{claim}*:", ""]
        lines += [f"* **{column.title}**: {_verdict(column, summary)}" for column in columns]
        totals = {v: sum(column.counts()[v] for column in columns) for v in VERDICTS}
        lines += ["", "Over these columns: " + ", ".join(f"{totals[v]} {v}" for v in VERDICTS) + ".", ""]
    return lines
