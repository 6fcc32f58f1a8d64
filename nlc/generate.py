"""Streaming decoding from a compiled model: the prompt once, then one token at a time.

The model's forward is a recurrence over its state (KV caches, fast weights, CMS
blocks), so decoding never recomputes the prefix: the prompt runs once, and every new
token is fed alone with the state the previous call returned.

Test-time learning, as the spec says: in-context levels with their own inner objective
(memories, ``l2`` CMS blocks) update on every token, prompt and generated alike. CMS levels
driven by the task loss learn from the next-token loss, which exists for the prompt
(targets ``prompt[1:]``; the last prompt position has none) but not for a generated token
while it is being decoded: generated tokens are fed with target -100 (no signal), so those
levels learn from the prompt only, while their clock keeps running (a pending partial-chunk
sum from the prompt is still applied at its chunk boundary). Decoding therefore equals
running the whole sequence at once with targets ``prompt[1:]`` and -100 after the prompt.

Sampling: ``logits / temperature``, restricted to the ``top_k`` largest when given, then a
draw from a ``torch.Generator`` seeded with ``seed`` (same seed, same text);
``temperature == 0`` is greedy (argmax). A text prompt is encoded with the spec's tokenizer
(:func:`nlc.data.get_tokenizer`: UTF-8 bytes by default, or GPT-2 BPE) and the continuation
decoded with ``errors="replace"`` (a cut inside a UTF-8 character shows U+FFFD).

Notation: B batch, T prompt tokens, N new tokens, V vocabulary.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .errors import NLCError

__all__ = ["GenerateError", "generate", "sample_next", "prompt_targets", "detach_state"]


class GenerateError(NLCError):
    """Invalid generation settings or a prompt the model cannot read."""


def detach_state(state: Any) -> Any:
    """The state with every tensor cut from the autograd graph (nested dicts kept)."""
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, dict):
        return {k: detach_state(v) for k, v in state.items()}
    return state


def sample_next(logits: Tensor, temperature: float, top_k: int | None,
                generator: torch.Generator) -> Tensor:
    """One token per row of ``logits`` (B, V) -> (B,) int64: greedy at ``temperature == 0``,
    else a draw from ``softmax(logits / temperature)`` over the ``top_k`` largest."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _check(max_new_tokens: int, temperature: float, top_k: int | None) -> None:
    if max_new_tokens < 0:
        raise GenerateError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise GenerateError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise GenerateError(f"top_k must be >= 1 (or omitted for the full vocabulary), got {top_k}")


def _tokenizer(model):
    from .data import get_tokenizer

    return get_tokenizer(model.spec.model.tokenizer)


def _encode(model, prompt: str | Tensor) -> Tensor:
    """The prompt as (B, T) int64 token ids on the model's device."""
    device = next(model.parameters()).device
    if isinstance(prompt, str):
        return _tokenizer(model).encode(prompt).to(device=device, dtype=torch.long)[None]
    tokens = prompt.to(device=device, dtype=torch.long)
    tokens = tokens.unsqueeze(0) if tokens.dim() == 1 else tokens
    if tokens.dim() != 2:
        raise GenerateError(f"token prompts are (T,) or (B, T); got shape {tuple(prompt.shape)}")
    if tokens.numel() and not 0 <= int(tokens.min()) <= int(tokens.max()) < model.vocab:
        raise GenerateError(f"prompt token ids must lie in [0, {model.vocab}) for this model")
    return tokens


def prompt_targets(tokens: Tensor, new_tokens: int = 0) -> Tensor:
    """The teach targets of a decode: ``prompt[1:]``, then -100 for the prompt's last
    position and the ``new_tokens`` generated after it. (B, T + new_tokens)."""
    targets = torch.full((tokens.shape[0], tokens.shape[1] + new_tokens), -100,
                         dtype=torch.long, device=tokens.device)
    targets[:, :tokens.shape[1] - 1] = tokens[:, 1:]
    return targets


@torch.no_grad()
def _decode(model, tokens: Tensor, max_new_tokens: int, temperature: float, top_k: int | None,
            seed: int) -> Tensor:
    generator = torch.Generator(device=tokens.device).manual_seed(seed)
    teach = model.teach_period is not None
    targets = prompt_targets(tokens) if teach else None
    no_signal = torch.full((tokens.shape[0], 1), -100, dtype=torch.long, device=tokens.device)
    logits, state = model(tokens, model.init_state(tokens.shape[0]), targets)
    new = []
    for index in range(max_new_tokens):
        token = sample_next(logits[:, -1], temperature, top_k, generator)
        new.append(token)
        if index + 1 < max_new_tokens:  # the last token's logits would go unused
            logits, state = model(token[:, None], detach_state(state), no_signal if teach else None)
    if not new:
        return tokens.new_zeros((tokens.shape[0], 0))
    return torch.stack(new, dim=1)


def generate(model, prompt: str | Tensor, max_new_tokens: int = 200, temperature: float = 0.8,
             top_k: int | None = None, seed: int = 0) -> str | Tensor:
    """Continue ``prompt`` by ``max_new_tokens`` tokens.

    ``prompt``: text (returns the continuation as text) or token ids (T,) or (B, T) (returns
    the new ids (B, N)). The prompt must be non-empty: the first new token is sampled from
    the logits after its last token. The model is put in eval mode for the call and its
    mode restored afterwards.
    """
    _check(max_new_tokens, temperature, top_k)
    tokens = _encode(model, prompt)
    if tokens.shape[1] == 0:
        raise GenerateError("the prompt is empty: give at least one token (e.g. a newline)")
    was_training = model.training
    model.eval()
    try:
        new = _decode(model, tokens, max_new_tokens, temperature, top_k, seed)
    finally:
        model.train(was_training)
    if isinstance(prompt, str):
        return _tokenizer(model).decode(new[0])
    return new
