"""The top of the spec language: model structure, knowledge transfer, training, search.

A spec is ``nlc: 1`` plus four sections::

    levels:   {name: level}      # what learns, how and how often (levels.py)
    model:    how levels compose into blocks: residuals, norms, repeat, head
    transfer: extra knowledge-transfer edges between levels (NL-arXiv §3.3)
    train:    data, batch, sequence length, steps, seed
    search:   a search space over any field (used by ``nlc search``)
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, Discriminator, Field, PrivateAttr, NonNegativeInt, PositiveInt, Tag, model_validator

from ..errors import FieldError
from .levels import MAX_HEADS, MAX_WIDTH, Level
from .values import INPUT, MAX_STEPS, MAX_TOKENS, Strict

SPEC_VERSION = 1


class LevelLayer(Strict):
    """``x <- x + level(norm(x))`` (or without the residual)."""

    level: str
    norm: Literal["rms", "layer", "none"] = "rms"
    residual: bool = True


class ParallelLayer(Strict):
    """Several levels on the same input, combined: ``sum``, ``mean``, ``learned`` weights
    (independent CMS, NL-arXiv Eq. 74) or ``gate`` (Titans MAG: ``a * sigmoid(b)`` of two
    normalised branches)."""

    parallel: list[str] = Field(min_length=2)
    combine: Literal["sum", "mean", "learned", "gate"] = "sum"
    norm: Literal["rms", "layer", "none"] = "rms"
    residual: bool = True

    @model_validator(mode="after")
    def _gate_pairs(self) -> "ParallelLayer":
        if self.combine == "gate" and len(self.parallel) != 2:
            raise FieldError("parallel", "combine 'gate' takes exactly two levels",
                             hint="parallel: [attention, memory]")
        return self


class ContextSpec(Strict):
    """``segment``: tokens per attention segment; default: the memory's chunk."""

    attention: str
    memory: str
    persistent: str | None = None
    segment: PositiveInt | None = Field(default=None, le=MAX_TOKENS)


class ContextLayer(Strict):
    """Titans MAC (memory as context): attention over ``[persistent || M(q) || segment]``;
    the memory is then updated with the attention output and gates it."""

    context: ContextSpec
    norm: Literal["rms", "layer", "none"] = "rms"
    residual: bool = True


def _layer_tag(item: Any) -> str | None:
    """A layer's model is picked by its key, so an error names one model, not three."""
    if isinstance(item, dict):
        return next((k for k in ("parallel", "context", "level") if k in item), None)
    return next((k for k in ("parallel", "context", "level") if hasattr(item, k)), None)


Layer = Annotated[
    Union[
        Annotated[LevelLayer, Tag("level")],
        Annotated[ParallelLayer, Tag("parallel")],
        Annotated[ContextLayer, Tag("context")],
    ],
    Discriminator(
        _layer_tag,
        custom_error_type="layer_kind",
        custom_error_message="a layer needs one of the keys 'level', 'parallel' or 'context'",
    ),
]


class Block(Strict):
    """A list of layers, repeated ``repeat`` times; each repetition has its own parameters.
    A bare level name is short for ``{level: name}``."""

    repeat: PositiveInt = Field(default=1, le=1024)
    layers: list[Layer] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _short_layers(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("layers"), list):
            data = {**data, "layers": [{"level": x} if isinstance(x, str) else x for x in data["layers"]]}
        return data

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict:
        """Editors see the short form too: a layer may be a bare level name."""
        schema = handler.resolve_ref_schema(handler(core_schema))
        items = schema["properties"]["layers"]["items"]
        schema["properties"]["layers"]["items"] = {"anyOf": [{"type": "string"}, items]}
        return schema


# Each tokenizer's vocabulary (nlc.data.tokenizers; kept here so validating a spec does not
# import torch): the default ``vocab``, and its least value (a larger one pads the table).
TOKENIZER_VOCAB = {"bytes": 256, "gpt2": 50257}


class ModelSpec(Strict):
    """``vocab`` defaults to the tokenizer's vocabulary; a smaller one is refused (a token
    id would index past the embedding), a larger one pads it (e.g. 50304 for gpt2)."""

    tokenizer: Literal["bytes", "gpt2"] = "bytes"
    vocab: PositiveInt = Field(default=256, le=2**20)
    width: PositiveInt = Field(default=128, le=MAX_WIDTH)
    heads: PositiveInt = Field(default=4, le=MAX_HEADS)
    blocks: list[Block] = Field(min_length=1)
    norm: Literal["rms", "layer"] = "rms"
    tie_embeddings: bool = True

    @model_validator(mode="before")
    @classmethod
    def _tokenizer_vocab(cls, data: Any) -> Any:
        """No ``vocab`` given: the tokenizer's (the field's 256 is the byte tokenizer's)."""
        tokenizer = data.get("tokenizer") if isinstance(data, dict) else None
        if isinstance(tokenizer, str) and tokenizer in TOKENIZER_VOCAB and "vocab" not in data:
            data = {**data, "vocab": TOKENIZER_VOCAB[data["tokenizer"]]}
        return data

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "ModelSpec":
        if self.width % self.heads:
            raise FieldError("heads", f"{self.heads} heads do not divide the width {self.width}",
                             hint=f"use a divisor of {self.width}")
        if self.tokenizer == "bytes" and self.vocab != 256:
            raise FieldError("vocab", "the byte tokenizer has a vocabulary of 256", hint="vocab: 256")
        least = TOKENIZER_VOCAB[self.tokenizer]
        if self.vocab < least:
            raise FieldError("vocab", f"the {self.tokenizer} tokenizer has {least} tokens: a vocab of "
                                      f"{self.vocab} leaves token ids without an embedding",
                             hint=f"leave vocab out (it defaults to the tokenizer's {least}), "
                                  f"or give at least {least}")
        return self


class Transfer(Strict):
    """A knowledge-transfer edge (NL-arXiv §3.3): ``source`` -> ``target``."""

    source: str = Field(alias="from")
    target: str = Field(alias="to")
    kind: Literal["conditioning", "backprop", "initialization", "generation"]


class TrainSpec(Strict):
    data: str = "shakespeare"
    steps: PositiveInt = Field(default=200, le=MAX_STEPS)
    batch: PositiveInt = Field(default=8, le=65536)
    seq_len: PositiveInt = Field(default=256, le=MAX_TOKENS)
    seed: NonNegativeInt = Field(default=0, le=2**63 - 1)  # a torch generator seed
    eval_every: PositiveInt = Field(default=50, le=MAX_STEPS)
    eval_batches: PositiveInt = Field(default=8, le=65536)
    dtype: Literal["float32", "bfloat16"] = "float32"


class SearchDim(Strict):
    """One search dimension: ``choice``, ``uniform``, ``loguniform`` or ``int`` (inclusive
    bounds), active only ``when`` the given paths hold the given values."""

    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = Field(default=None, strict=False)  # YAML gives lists
    loguniform: tuple[float, float] | None = Field(default=None, strict=False)
    integer: tuple[int, int] | None = Field(default=None, alias="int", strict=False)
    when: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one(self) -> "SearchDim":
        given = [n for n in ("choice", "uniform", "loguniform", "integer") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of choice, uniform, loguniform, int")
        low_high = getattr(self, given[0])
        if given[0] != "choice" and not low_high[0] < low_high[1]:
            raise ValueError(f"{given[0]} needs low < high, got {list(low_high)}")
        if given[0] == "loguniform" and low_high[0] <= 0:
            raise ValueError("loguniform needs low > 0")
        if given[0] == "choice" and not self.choice:
            raise ValueError("choice needs at least one value")
        return self


class SearchSpec(Strict):
    trials: PositiveInt = Field(default=20, le=100_000)
    objectives: list[Literal["val_bpb", "tokens_per_s", "params"]] = ["val_bpb"]
    prune: Literal["none", "median", "halving"] = "median"
    space: dict[str, SearchDim] = Field(min_length=1)


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _level_name(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):  # match() would accept a trailing newline
        raise ValueError(f"level name {name!r} is not an identifier (letters, digits and _, "
                         "not starting with a digit)")
    if name == INPUT:
        raise ValueError("'input' names a level's own input; choose another level name")
    return name


LevelName = Annotated[str, AfterValidator(_level_name)]


class Spec(Strict):
    """A whole nlc spec (version ``nlc: 1``)."""

    nlc: Literal[1] = Field(description="spec language version")
    name: str | None = None
    description: str | None = None
    levels: dict[LevelName, Level] = Field(min_length=1)
    model: ModelSpec
    transfer: list[Transfer] = []
    train: TrainSpec = TrainSpec()
    search: SearchSpec | None = None

    _raw: Any = PrivateAttr(default=None)  # the RawSpec it was loaded from (file/line marks)

    @property
    def raw(self) -> Any:
        """The :class:`~nlc.spec.source.RawSpec` this spec was validated from (the file, line
        and column of every field, for messages of later stages); None for a spec built in
        Python."""
        return self._raw

    def located_by(self, raw: Any) -> Spec:
        """Keep ``raw`` as :attr:`raw` (the validator calls this); returns the spec."""
        self._raw = raw
        return self

    def __eq__(self, other: object) -> bool:
        """Specs are equal when their fields are, wherever they were loaded from."""
        return type(other) is type(self) and self.__dict__ == other.__dict__

    __hash__ = None  # mutable containers inside; not hashable


