"""What :func:`nlc.train` is given, made concrete: the run's spec, its model, its data.

The run's spec is the one given with the call's ``overrides`` and its ``steps``, ``seed``
and data name written into ``train:`` (so the checkpoint's stored spec and hash describe the
run completely). Data is a corpus name (``nlc.data.load_corpus`` with the spec's
tokenizer) or any object with 1-D integer tensors ``train`` and ``val`` and ``vocab``;
bits per byte use its ``train_bytes`` / ``val_bytes`` when it has them (a
:class:`nlc.data.Corpus` does), and otherwise take one token per byte; levels with
``lifetime: document`` need its document offsets ``train_starts`` / ``val_starts`` (a
Corpus has them too).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..compiler import compile_spec
from ..data import load_corpus
from ..errors import NLCError
from ..spec import Spec
from ..graph.validate import load_spec
from ..spec.load import spec_to_yaml


class TrainInputError(NLCError):
    """The model, spec or data given to ``nlc.train`` cannot be used together."""


@dataclass(frozen=True)
class TrainData:
    name: str
    sha256: str | None
    train: Tensor
    val: Tensor
    vocab: int
    train_bytes_per_token: float
    val_bytes_per_token: float
    train_starts: Tensor | None = None  # document offsets (nlc.data.documents), if the data has them
    val_starts: Tensor | None = None


def run_spec(spec_or_model: Any, overrides: tuple[str, ...] | list[str], *, steps: int | None,
             seed: int | None, data_name: str | None) -> Spec:
    """The spec of the run: the given one, its overrides, and the run's train settings."""
    run = [f"train.{key}={json.dumps(value)}" for key, value in (("steps", steps), ("seed", seed), ("data", data_name))
           if value is not None]  # JSON scalars are YAML: a name like "yes" or "a: b" stays a string
    if isinstance(spec_or_model, nn.Module):
        if overrides:
            raise TrainInputError("overrides change a spec, but a compiled model was given "
                                  "(pass the spec or its path instead, or compile with the overrides)")
        spec_or_model = _model_spec(spec_or_model)
    if isinstance(spec_or_model, Spec):
        spec_or_model = spec_to_yaml(spec_or_model)
    if isinstance(spec_or_model, (str, Path)):
        return load_spec(spec_or_model, [*overrides, *run])
    raise TrainInputError(f"nlc.train needs a spec (path, YAML text or Spec) or a compiled model, "
                          f"not {type(spec_or_model).__name__}")


def _model_spec(model: nn.Module) -> Spec:
    spec = getattr(model, "spec", None)
    if not isinstance(spec, Spec):
        raise TrainInputError("the model has no .spec: train a model made by nlc.compile, or pass its spec")
    return spec


def train_data(data: Any, spec: Spec) -> TrainData:
    """The run's token splits (fetching the corpus named by ``spec.train.data`` if needed)."""
    if data is None or isinstance(data, str):
        data = load_corpus(spec.train.data, tokenizer=spec.model.tokenizer)
    for split in ("train", "val"):
        tokens = getattr(data, split, None)
        if not isinstance(tokens, Tensor) or tokens.dim() != 1 or tokens.dtype.is_floating_point or not tokens.numel():
            raise TrainInputError(f"data.{split} must be a non-empty 1-D integer token tensor "
                                  f"(got {_describe(tokens)}); pass a corpus name or nlc.data.load_corpus(...)")
    vocab = int(data.vocab)
    if vocab > spec.model.vocab:
        raise TrainInputError(f"the data has a vocabulary of {vocab} tokens but the model only {spec.model.vocab} "
                              f"(set model.vocab={vocab} or model.tokenizer to the data's tokenizer)")
    return TrainData(
        name=str(getattr(data, "name", spec.train.data)), sha256=getattr(data, "sha256", None),
        train=data.train, val=data.val, vocab=vocab,
        train_bytes_per_token=getattr(data, "train_bytes", data.train.numel()) / data.train.numel(),
        val_bytes_per_token=getattr(data, "val_bytes", data.val.numel()) / data.val.numel(),
        train_starts=getattr(data, "train_starts", None), val_starts=getattr(data, "val_starts", None))


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def data_name(data: Any) -> str | None:
    """The name a data argument gives the run (None: the spec's ``train.data``)."""
    if data is None:
        return None
    return data if isinstance(data, str) else getattr(data, "name", None)


def build_model(spec_or_model: Any, spec: Spec, device: torch.device) -> nn.Module:
    """The model to train: ``nlc.compile(spec)``, or the given one, moved to ``device``, its
    ``.spec`` replaced by the run's (same architecture, the run's train settings)."""
    if isinstance(spec_or_model, nn.Module):
        spec_or_model.spec = spec  # the run's train settings, same architecture
        return spec_or_model.to(device)

    return compile_spec(spec, device=device)
