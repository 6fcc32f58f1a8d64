"""Small value types of the spec language: knobs, periods, sources, initial states.

Each accepts a short YAML form and a long mapping form, e.g. ``lr: 0.1`` or
``lr: {learned: 0.1}`` or ``lr: {from: input, init: 0.1}``; both load into the
same model, and dumping writes the short form back where one exists.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from ..errors import FieldError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    model_serializer,
    model_validator,
)

INPUT = "input"  # the source name of a level's own input (the residual stream)

# Generous upper bounds of sizes: far above any model this compiler is meant for, low enough
# that a typo (an extra digit, 1e30) is refused at its line instead of exhausting memory.
MAX_TOKENS = 2**20  # sequence lengths, windows, periods in tokens
MAX_STEPS = 100_000_000  # optimizer steps (and periods on that clock)


class Strict(BaseModel):
    """Base of every spec model: unknown keys are errors, values are immutable, and no
    number is NaN or infinite (``.nan`` / ``.inf`` in YAML; nothing in a spec means them)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True,
                              allow_inf_nan=False)


def _short_form_schema(handler: Any, core_schema: Any, *short: dict) -> dict:
    schema = handler.resolve_ref_schema(handler(core_schema))
    return {"anyOf": [*short, schema]}


class Knob(Strict):
    """A hyper-parameter of an update rule (lr, retention, momentum).

    Exactly one of:

    * ``value`` - a constant (YAML: a bare number);
    * ``learned`` - a scalar per head, initialised to this value and trained by the
      level's outer optimizer;
    * ``source`` (YAML key ``from``) - data-dependent, produced per token either by a
      static projection of the level input (``from: input``; its weights belong to the
      slower outer level) or by another level named here (HOPE: a memory that updates
      in context). ``init`` is the value at initialisation and ``max`` the upper bound
      (the projection is squashed as ``max * sigmoid(.)``).

    ``per`` chooses whether a data-dependent gate changes every token or once per chunk.

    Each role is its own subclass (:class:`LrKnob`, :class:`MomentumKnob`, ...) with the
    range its meaning allows (``bounds``, JSON Schema keywords), checked on ``value``,
    ``learned`` and ``init`` and written into the JSON Schema; a gate's ``max`` is at most 1.
    """

    role: ClassVar[str] = "knob"
    bounds: ClassVar[dict[str, float]] = {}
    example: ClassVar[str] = ""

    value: float | None = None
    learned: float | None = None
    source: str | None = Field(default=None, alias="from")
    init: float | None = None
    max: float = Field(default=1.0, gt=0)
    per: Literal["token", "chunk"] = "token"

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            if not math.isfinite(data):
                raise ValueError(f"got {data!r}; {cls.role} must be a finite number")
            return {"value": float(data)}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> "Knob":
        given = [n for n in ("value", "learned", "source") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of a number, 'learned: <init>' or 'from: <input|level>';"
                f" got {', '.join(given) or 'none'}"
            )
        if self.source is None and (self.init is not None or self.per != "token" or self.max != 1.0):
            field = "init" if self.init is not None else "per" if self.per != "token" else "max"
            raise FieldError(field, f"'{field}' only applies to a data-dependent knob",
                             hint="add 'from: input' or remove it")
        self._check_range()
        return self

    def _check_range(self) -> None:
        for field in ("value", "learned", "init"):
            number = getattr(self, field)
            if number is not None and not _within(number, self.bounds):
                message = f"{self.role} must be in {_interval(self.bounds)}; got {number!r}"
                if field == "value":  # the short form: the error belongs to the knob itself
                    raise ValueError(f"{message} ({self.example})")
                raise FieldError(field, message, hint=self.example)
        top = self._top()
        if self.max > top:
            if top <= 1:  # a gate: max * sigmoid(.)
                raise FieldError("max", f"a {self.role} gate stays in (0, 1); max {self.max} lets it leave",
                                 hint="use max <= 1: the gate is max * sigmoid(.)")
            raise FieldError("max", f"{self.role} max must be <= {top}; got {self.max!r}", hint=self.example)

    @classmethod
    def _top(cls) -> float:
        """The largest value the role allows: the bound of a data-dependent knob's ``max``."""
        return cls.bounds.get("maximum", cls.bounds.get("exclusiveMaximum", math.inf))

    @property
    def kind(self) -> str:
        return "constant" if self.value is not None else "learned" if self.learned is not None else "data"

    @property
    def initial(self) -> float:
        """The knob's value at initialisation."""
        if self.value is not None:
            return self.value
        if self.learned is not None:
            return self.learned
        return self.init if self.init is not None else 0.5 * self.max

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        if self.kind == "constant":
            return self.value
        out = handler(self)
        return {k: v for k, v in out.items() if v is not None and not (k == "max" and v == 1.0)
                and not (k == "per" and v == "token")}

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict:
        schema = handler.resolve_ref_schema(handler(core_schema))
        for field in ("value", "learned", "init"):
            for option in schema["properties"][field]["anyOf"]:
                if option.get("type") == "number":
                    option.update(cls.bounds)
        if math.isfinite(cls._top()):
            schema["properties"]["max"]["maximum"] = cls._top()
        return {"anyOf": [{"type": "number", **cls.bounds}, schema]}


class LrKnob(Knob):
    """A step size: positive (0 would never learn) and at most 100, far beyond any stable
    inner step (:func:`nlc.spec.levels.lr_warnings` names the stable ranges)."""

    role, bounds, example = "lr", {"exclusiveMinimum": 0, "maximum": 100}, "e.g. lr: 0.1"


class MomentumKnob(Knob):
    """The fraction of the previous update kept (Titans' eta): 1 or more never forgets it and
    the state grows without bound."""

    role, bounds = "momentum", {"minimum": 0, "exclusiveMaximum": 1}
    example = "the fraction of the previous update kept, e.g. momentum: 0.9"


class RetentionKnob(Knob):
    """The factor on the old state: 1 keeps it, 0 would erase it every token, above 1 grows it."""

    role, bounds = "retention", {"exclusiveMinimum": 0, "maximum": 1}
    example = "the factor on the old state, e.g. retention: 0.99"


class HuberDeltaKnob(Knob):
    """The Huber threshold of the attentional bias (MIRAS' Yaad ``delta_t``): errors within it
    are squared, beyond it linear. Positive; up to 1000, far beyond any error of unit-scale
    values (a data-dependent one is ``max * sigmoid(.)``, so give ``max`` above ``init``)."""

    role, bounds = "delta", {"exclusiveMinimum": 0, "maximum": 1000}
    example = "the error size where the loss turns linear, e.g. delta: 1.0"


class ForgetKnob(Knob):
    """Titans' forget gate, ``retention = 1 - forget``: in [0, 1) for the same reasons."""

    role, bounds = "forget", {"minimum": 0, "exclusiveMaximum": 1}
    example = "the fraction of the old state erased, e.g. forget: 0.01"


def _within(number: float, bounds: dict[str, float]) -> bool:
    """Whether ``number`` satisfies JSON-Schema-style ``bounds``."""
    return (number >= bounds.get("minimum", -math.inf) and number > bounds.get("exclusiveMinimum", -math.inf)
            and number <= bounds.get("maximum", math.inf) and number < bounds.get("exclusiveMaximum", math.inf))


def _interval(bounds: dict[str, float]) -> str:
    """A role's ``bounds`` (a lower and an upper one) as an interval: ``[0, 1)``, ``(0, 1]``."""
    low = f"[{bounds['minimum']}" if "minimum" in bounds else f"({bounds['exclusiveMinimum']}"
    high = f"{bounds['maximum']}]" if "maximum" in bounds else f"{bounds['exclusiveMaximum']})"
    return f"{low}, {high}"


class Period(Strict):
    """How often a level's state changes.

    * ``tokens: C`` - every C tokens (YAML: a bare integer; 1 = every token);
    * ``never`` - never inside a context: only the outer optimizer changes it
      (YAML: the string ``never``), frequency 0 in context;
    * ``steps: k`` - an outer (optimizer) level's own clock: every k optimizer steps.
    """

    tokens: PositiveInt | None = Field(default=None, le=MAX_TOKENS)
    never: bool = False
    steps: PositiveInt | None = Field(default=None, le=MAX_STEPS)

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        if isinstance(data, bool):
            raise ValueError("a period is a number of tokens, 'never' or {steps: k}, not a boolean")
        if isinstance(data, int):
            return {"tokens": data}
        if isinstance(data, float):
            raise ValueError(f"got {data!r}; a period is a whole number of tokens, 'never' or {{steps: k}}")
        if isinstance(data, str):
            if data == "never":
                return {"never": True}
            if data.strip().isascii() and data.strip().isdigit():
                return {"tokens": int(data)}
            raise ValueError(f"unknown period {data!r}: use a number of tokens, 'never' or {{steps: k}}")
        return data

    @model_validator(mode="after")
    def _one(self) -> "Period":
        if sum([self.tokens is not None, self.never, self.steps is not None]) != 1:
            raise ValueError("give exactly one of a number of tokens, 'never' or {steps: k}")
        return self

    @model_serializer(mode="plain")
    def _dump(self) -> Any:
        if self.tokens is not None:
            return self.tokens
        return "never" if self.never else {"steps": self.steps}

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict:
        return _short_form_schema(
            handler, core_schema, {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS}, {"const": "never"}
        )


class Source(Strict):
    """Where a memory's keys, values or queries come from.

    ``from: input`` projects the level input with a static linear map (owned by the
    outer level; ``project: false`` uses the input itself, split into heads);
    ``from: <level>`` uses that level's output as is (HOPE: ``k_t = M_k(x_t)``).
    ``conv`` adds a causal depthwise convolution of that width, ``norm: l2`` normalises
    each head's vector and ``activation`` is applied after the projection.
    """

    source: str = Field(default=INPUT, alias="from")
    project: bool = True
    conv: int = Field(default=0, ge=0, le=16)
    norm: Literal["none", "l2"] = "none"
    activation: Literal["none", "silu"] = "none"

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        return {"from": data} if isinstance(data, str) else data

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        out = handler(self)
        defaults = {"project": True, "conv": 0, "norm": "none", "activation": "none"}
        short = {k: v for k, v in out.items() if defaults.get(k, object()) != v}
        return short.get("from", INPUT) if set(short) <= {"from"} else short

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict:
        return _short_form_schema(handler, core_schema, {"type": "string"})


class Init(Strict):
    """A level's initial state.

    * ``learned`` (default) - meta-learned by the level's outer optimizer through the
      unrolled inner updates (NL-arXiv §3.3, Eq. 28, knowledge transfer by initialisation);
    * ``zero`` - all zeros, not learned;
    * ``from: <level>`` - meta-learned by a named *slower* level, whose current state the
      level is re-initialised to every ``reset`` (nested CMS, NL-arXiv Eq. 72);
    * ``copy: <level>`` - starts as a copy of another level's initial state (ad-hoc level
      stacking, NL-arXiv §7.3).
    """

    kind: Literal["learned", "zero", "from", "copy"] = "learned"
    level: str | None = None
    reset: Literal["never", "context", "slower_chunk"] = "never"

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"kind": data}
        if isinstance(data, dict):
            for key in ("from", "copy"):
                if key in data:
                    rest = {k: v for k, v in data.items() if k != key}
                    clash = {"kind", "level", "from", "copy"} & set(rest)
                    if clash:
                        raise FieldError(sorted(clash)[0], f"'{key}: <level>' already says how the state "
                                         f"starts; '{sorted(clash)[0]}' contradicts it", hint="remove it")
                    return {"kind": key, "level": data[key], **rest}
        return data

    @model_validator(mode="after")
    def _level_given(self) -> "Init":
        if (self.kind in ("from", "copy")) != (self.level is not None):
            raise FieldError("kind", "'from' and 'copy' name a level; 'learned' and 'zero' take none",
                             hint="write init: {from: LEVEL} or init: learned")
        return self

    @model_serializer(mode="plain")
    def _dump(self) -> Any:
        if self.level is None and self.reset == "never":
            return self.kind
        out: dict[str, Any] = {self.kind: self.level} if self.level else {"kind": self.kind}
        if self.reset != "never":
            out["reset"] = self.reset
        return out

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict:
        return _short_form_schema(
            handler, core_schema, {"enum": ["learned", "zero"]},
            {"type": "object", "properties": {"from": {"type": "string"},
             "copy": {"type": "string"}, "reset": {"enum": ["never", "context", "slower_chunk"]}},
             "additionalProperties": False},
        )
