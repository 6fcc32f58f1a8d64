"""IR -> readable Python source of a standalone PyTorch module.

The emitted module imports only ``nlc.runtime``. It defines one constant per spec level
(its resolved IR node, the fields that differ from their defaults; a comment names the
YAML line and the paper equations the level implements, :mod:`.equations`) and one
:class:`~nlc.runtime.model.NLCModel` subclass, ``Model``, whose ``layers`` method calls
one mixer per layer, each line commented with the spec level (split into ``before_teach``
and ``from_teach`` when leading layers are out of the teach signal's reach). ``nlc.compile`` executes
exactly this text, so the file and the model never drift. Text from the spec reaches this source only through :mod:`nlc.lower.names` and
``repr`` (see there why).
"""
from __future__ import annotations

import dataclasses
import math
import shlex
import textwrap
from fractions import Fraction

from ..graph.build import INFINITE
from ..ir.nodes import LayerIR, MemoryIR, ModelIR
from ..ir.resolve import coupled_components, is_self_modifying
from ..schedule import UpdateSchedule
from ..version import __version__
from .equations import equations
from .names import comment, identifier


def constant(level: str) -> str:
    """The module constant of a level: ``LEVEL_`` and its name (as written when it is an
    identifier, so names that differ only in case get distinct constants)."""
    return f"LEVEL_{identifier(level)}"


def regenerate(ir: ModelIR) -> str:
    """The shell command that writes this module again: the spec file and the overrides
    that produced the IR, each quoted for a POSIX shell."""
    return shlex.join(["nlc", "compile", ir.source_file, *ir.overrides, "--emit", "FILE"])


WIDTH = 100  # the emitted source's line length


def inline(value: object) -> str:
    """Python source for an IR value on one line: a dataclass as ``rt.Class(...)`` with only
    the fields that differ from their defaults (the leading required fields of the small
    value classes positionally), a Fraction as ``rt.Fraction(n, d)`` (``rt.INFINITE`` for
    f = infinity), calls and containers item by item, anything else by ``repr``."""
    if isinstance(value, Code):
        return str(value)
    parts = _parts(value)
    if parts is not None:
        head, items, tail = parts
        return head + ", ".join(prefix + inline(item) for prefix, item in items) + tail
    if isinstance(value, Fraction):
        if value == INFINITE:
            return "rt.INFINITE"
        return f"rt.Fraction({value.numerator})" if value.denominator == 1 else \
            f"rt.Fraction({value.numerator}, {value.denominator})"
    if isinstance(value, float) and not math.isfinite(value):  # pragma: no cover - the validator refuses them
        raise ValueError(f"{value} in IR: repr would write a bare name, not a literal")
    return repr(value)


class Code(str):
    """Source text that :func:`inline` writes as it is (an expression already made here)."""


@dataclasses.dataclass(frozen=True)
class Call:
    """A call ``function(*args, **keywords)``, written like a dataclass."""

    function: str
    args: tuple = ()
    keywords: tuple[tuple[str, object], ...] = ()


POSITIONAL = ("KnobIR", "SourceIR", "ObjectiveIR", "FeaturesIR")  # small values: kind first


def _parts(value: object) -> tuple[str, list[tuple[str, object]], str] | None:
    """``(opening, [(prefix, item), ...], closing)`` of a call, dataclass, dict or tuple (a
    prefix is ``"name="``, ``"'key': "`` or empty); None for anything else."""
    if isinstance(value, Call):
        return (f"{value.function}(", [("", a) for a in value.args] + [(f"{k}=", v) for k, v in value.keywords],
                ")")
    if dataclasses.is_dataclass(value):
        items = []
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.default is not dataclasses.MISSING and item == f.default:
                continue
            positional = type(value).__name__ in POSITIONAL and f.default is dataclasses.MISSING
            items.append(("" if positional else f"{f.name}=", item))
        return f"rt.{type(value).__name__}(", items, ")"
    if isinstance(value, dict):
        return "{", [(f"{k!r}: ", v) for k, v in value.items()], "}"
    if isinstance(value, tuple):
        return "(", [("", v) for v in value], ",)" if len(value) == 1 else ")"
    return None


def literal(value: object, indent: int = 0, lead: int = 0) -> str:
    """:func:`inline`, broken over lines where it does not fit in :data:`WIDTH` at
    ``indent`` after ``lead`` characters of its first line: the arguments or items packed
    into lines, one that does not fit alone broken the same way one level deeper."""
    one, parts = inline(value), _parts(value)
    if parts is None or indent + lead + len(one) <= WIDTH:
        return one
    head, items, tail = parts
    pad = " " * (indent + 4)
    lines, line = [], ""
    for prefix, item in items:
        text = prefix + inline(item) + ","
        if len(pad) + len(text) > WIDTH:  # too long for a line of its own: break it too
            text = prefix + literal(item, indent + 4) + ","
        if line and len(pad) + len(line) + 1 + len(text) <= WIDTH and "\n" not in text:
            line += " " + text
        else:
            if line:
                lines.append(pad + line)
            line = text
    lines.append(pad + line)
    return head + "\n" + "\n".join(lines) + "\n" + " " * indent + tail[-1]


def emit(ir: ModelIR) -> str:
    """The module source for a model IR."""
    lines = [
        f'"""Generated by nlc {__version__} from the spec SPEC in the file SOURCE. Do not edit:',
        "the shell command REGENERATE writes it again (with FILE, the file to write).",
        '"""',
        "from nlc import runtime as rt",
        "",
        f"SPEC = {ir.name!r}",
        f"SOURCE = {ir.source_file!r}",
        f"REGENERATE = {regenerate(ir)!r}",
        "",
        "# The spec's levels, resolved: gates normalised to `retention`; a field at its default",
        "# (nlc.ir.nodes: no momentum, no gate, never reset) is left out.",
    ]
    written: list[str] = []
    for name in _levels_used(ir):
        level = ir.levels[name]
        twin = next((w for w in written if dataclasses.replace(ir.levels[w], name=name) == level), None)
        if twin is not None:  # the same level under another name (one YAML anchor, several levels)
            lines += ["", comment(f"level '{name}' ({level.origin}): level '{twin}' under another name"),
                      f"{constant(name)} = rt.replace({constant(twin)}, name={name!r})"]
        else:
            lines += ["", comment(f"level '{name}' ({level.origin})"), *_comments(_equations(ir, name)),
                      f"{constant(name)} = {literal(level, 0, len(constant(name)) + 3)}"]
        written.append(name)
    attrs = {layer.name: identifier(layer.name) for layer in ir.layers}
    schedule = UpdateSchedule.from_ir(ir)
    sources = {src for layer in ir.layers for _, src in layer.transfers}  # transfer edges read them
    lines += ["", "", "class Model(rt.NLCModel):",
              f"    LAYERS = {literal(tuple(attrs.values()), 4, 9)}",
              f"    ORIGINS = {literal({attrs[layer.name]: _origin(ir, layer) for layer in ir.layers}, 4, 10)}",
              "    # the update schedule (nlc.schedule): the one clock of the levels and optimizer levels",
              f"    SCHEDULE = {literal(schedule, 4, 11)}"]
    nested = _nested_layers(ir)
    if nested:
        lines.append(f"    NESTED = {literal({attrs[a]: attrs[b] for a, b in nested.items()}, 4, 9)}")
    lines += ["", "    def __init__(self):",
              f"        super().__init__(name={ir.name!r}, vocab={ir.vocab}, width={ir.width}, "
              f"norm={ir.norm!r}, tie_embeddings={ir.tie_embeddings})"]
    where = None
    for layer in ir.layers:
        if (layer.block, layer.repeat) != where:
            where = layer.block, layer.repeat
            lines.append(f"        {comment(f'block {layer.block}, repeat {layer.repeat} ({layer.origin})')}")
        target = f"self.{attrs[layer.name]} = "
        lines.append(f"        {target}{literal(_layer_expr(ir, layer), 8, len(target))}")
    split = _teach_free_prefix(ir, set(schedule.teach), set(nested) | sources)
    calls = [_layer_call(layer, attrs, sources) for layer in ir.layers]
    if split:
        lines += ["", "    def layers(self, x, state, pos):",
                  "        x, state = self.before_teach(x, state, pos)",
                  "        return self.from_teach(x, state, pos)",
                  "", "    def before_teach(self, x, state, pos):",
                  "        # no level here learns from the task loss: the teach loop runs these once per call",
                  *calls[:split], "        return x, state",
                  "", "    def from_teach(self, x, state, pos):", *calls[split:], "        return x, state", ""]
    else:
        lines += ["", "    def layers(self, x, state, pos):", *calls, "        return x, state", ""]
    return "\n".join(lines)


def _layer_call(layer: LayerIR, attrs: dict[str, str], sources: set[str]) -> str:
    """The line(s) of ``layers`` that call one layer (and keep its output where a transfer
    edge reads it, validation rule 13; ``sources``: the layers such edges read)."""
    attr = attrs[layer.name]
    names = ", ".join(f"'{n}'" for n in layer.levels)
    lines = ["        before = x"] if layer.name in sources and layer.residual else []
    extra = "".join(f", out_{attrs[src]}" for _, src in layer.transfers)
    lines.append(f"        x, state[{attr!r}] = self.{attr}(x, state[{attr!r}], pos{extra})"
                 f"  {comment(f'{names} ({layer.origin})')}")
    if layer.name in sources:
        lines.append(f"        out_{attr} = x - before" if layer.residual else f"        out_{attr} = x")
    return "\n".join(lines)


def _teach_free_prefix(ir: ModelIR, teach: set[str], tied: set[str]) -> int:
    """How many leading layers the teach loop may run once over a whole call instead of once
    per teach segment (NLCModel._segments): none of them holds a level in ``teach`` (those
    that learn from the task loss) or is ``tied`` (re-initialised from another level, or a
    transfer edge's source), so their output and state do not depend on the teach signal.
    0 without teaching levels, or when no layer precedes the first teaching one."""
    count = 0
    for layer in ir.layers:
        if teach & set(layer.levels) or layer.name in tied:
            break
        count += 1
    return count if teach and count < len(ir.layers) else 0


def _comments(text: str) -> list[str]:
    """``text`` as comment lines of at most :data:`WIDTH` characters (:func:`comment` each),
    broken after a ``;`` where it can be (a citation stays on one line)."""
    lines, line = [], ""
    for part in text.split("; "):
        candidate = f"{line}; {part}" if line else part
        if line and len(candidate) + 2 > WIDTH:
            lines.append(line + ";")
            candidate = part
        line = candidate
    lines.append(line)
    return [comment(piece) for line in lines
            for piece in textwrap.wrap(line, WIDTH - 2, break_long_words=False, break_on_hyphens=False)]


def _equations(ir: ModelIR, name: str) -> str:
    level = ir.levels[name]
    mains = [n for n, lv in ir.levels.items() if isinstance(lv, MemoryIR) and name in coupled_components(ir, n)]
    main = isinstance(level, MemoryIR) and (bool(coupled_components(ir, name)) or is_self_modifying(level))
    return equations(level, self_modifying=main, component=bool(mains))


def _nested_layers(ir: ModelIR) -> dict[str, str]:
    """Layer -> the layer (same block repetition) of the slower level that initialises it
    (validation rule 9 guarantees a nested level's own layer and its source's)."""
    out = {}
    for layer in ir.layers:
        level = ir.levels[layer.levels[0]]
        if layer.kind == "level" and getattr(level, "init", None) == "from":
            out[layer.name] = next(o.name for o in ir.layers if o.kind == "level"
                                   and o.levels[0] == level.init_level
                                   and (o.block, o.repeat) == (layer.block, layer.repeat))
    return out


def _origin(ir: ModelIR, layer: LayerIR) -> str:
    names = ", ".join(f"'{n}'" for n in layer.levels)
    return f"level {names} (layer at {layer.origin}; level at {ir.levels[layer.levels[0]].origin})"


def _levels_used(ir: ModelIR) -> list[str]:
    used: list[str] = []
    for layer in ir.layers:
        for name in layer.levels:
            level = ir.levels[name]
            extra = [getattr(level, "persistent", None)]
            if isinstance(level, MemoryIR):
                extra += list(coupled_components(ir, name))
            for item in (*extra, name):
                if item and item not in used:
                    used.append(item)
    return [n for n in ir.levels if n in used]


def _mixer_expr(ir: ModelIR, name: str) -> Call:
    level = ir.levels[name]
    w = ("width", ir.width)
    if level.type == "attention":
        persistent = Code(constant(level.persistent)) if level.persistent else None
        return Call("rt.AttentionMixer", (Code(constant(name)),), (w, ("persistent", persistent)))
    if level.type == "memory":
        components = coupled_components(ir, name)
        if components or is_self_modifying(level):
            comps = {c: Code(constant(c)) for c in components}
            return Call("rt.SelfModifyingMemory", (Code(constant(name)),), (("components", comps), w))
        return Call("rt.MemoryMixer", (Code(constant(name)),), (w,))
    if level.type == "mlp":
        kind = "CMSMixer" if level.period else "MLPMixer"
        return Call(f"rt.{kind}", (Code(constant(name)),), (w,))
    raise ValueError(f"level '{name}' ({level.origin}) of type {level.type} cannot be a layer")


def _layer_expr(ir: ModelIR, layer: LayerIR) -> Call:
    common = (("norm", layer.norm), ("residual", layer.residual), ("width", ir.width))
    if layer.kind == "level":
        kinds = tuple(kind for kind, _ in layer.transfers)
        edges = (("transfers", kinds),) if kinds else ()
        return Call("rt.Residual", (_mixer_expr(ir, layer.levels[0]),), common + edges)
    if layer.kind == "parallel":
        mixers = Code("[" + ", ".join(inline(_mixer_expr(ir, n)) for n in layer.levels) + "]")
        return Call("rt.Parallel", (mixers,), (("combine", layer.combine), *common))
    attention, memory, *rest = layer.levels
    persistent = Code(constant(rest[0])) if rest else None
    return Call("rt.Context", (_mixer_expr(ir, attention), _mixer_expr(ir, memory)),
                (("persistent", persistent), ("segment", layer.segment), *common))
