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

Non-finite logits (a diverged model) stop the decode before sampling from them with a
:class:`~nlc.errors.NonFiniteError` naming the level that went non-finite first and the
token (the sequence so far re-run with hooks,
:meth:`nlc.runtime.model.NLCModel.diagnose_non_finite`): sampling from NaN probabilities
would fail inside ``torch.multinomial`` (a device-side assert on CUDA).

Printing: model output is untrusted text. :func:`printable` renders it for a terminal
(control characters shown as visible escapes such as ``\\x1b``), so a sample cannot move
the cursor, retitle the window or hide text; ``nlc train`` and ``nlc generate`` print
through it (``nlc generate --raw`` writes the bytes as they are, for pipes).

Notation: B batch, T prompt tokens, N new tokens, V vocabulary.
"""
from __future__ import annotations

import unicodedata

import torch
from torch import Tensor

from .data import get_tokenizer
from .errors import NLCError
from .runtime.diagnose import non_finite_error
from .runtime.lifetime import detach_state

__all__ = ["GenerateError", "generate", "sample_next", "prompt_targets", "detach_state", "printable"]

# Bidirectional overrides and isolates reorder what the terminal shows ("Trojan source").
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class GenerateError(NLCError):
    """Invalid generation settings or a prompt the model cannot read."""


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: printable characters, newlines and tabs as
    they are; every other control character (C0 such as ESC, BEL and CR, DEL, C1 such as
    CSI, and the bidirectional overrides) as a visible Python-style escape (``\\x1b``,
    ``\\x9b``, ``\\u202e``). An escape sequence thus shows as text instead of acting."""
    return "".join(
        char if char in "\n\t" or (unicodedata.category(char) != "Cc" and char not in _BIDI_CONTROLS)
        else (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        for char in text
    )


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
            seed: int, state: dict | None = None) -> Tensor:
    generator = torch.Generator(device=tokens.device).manual_seed(seed)
    teach = model.teach_period is not None
    targets = prompt_targets(tokens) if teach else None
    no_signal = torch.full((tokens.shape[0], 1), -100, dtype=torch.long, device=tokens.device)
    start = model.init_state(tokens.shape[0]) if state is None else detach_state(state)
    logits, state = model(tokens, start, targets)
    new = []
    for index in range(max_new_tokens):
        if not bool(torch.isfinite(logits[:, -1]).all()):
            raise _non_finite(model, tokens, new)
        token = sample_next(logits[:, -1], temperature, top_k, generator)
        new.append(token)
        if index + 1 < max_new_tokens:  # the last token's logits would go unused
            logits, state = model(token[:, None], detach_state(state), no_signal if teach else None)
    if not new:
        return tokens.new_zeros((tokens.shape[0], 0))
    return torch.stack(new, dim=1)


def _non_finite(model, prompt: Tensor, new: list[Tensor]) -> Exception:
    """The error for non-finite logits after ``prompt`` and ``new`` tokens: the decode so
    far re-run as one call (which equals it, see the module doc) to locate the value."""
    tokens = torch.cat([prompt, *(t[:, None] for t in new)], dim=1)
    targets = prompt_targets(prompt, len(new)) if model.teach_period is not None else None
    where = "the prompt" if not new else f"generated token {len(new)}"
    return non_finite_error(model, f"non-finite logits after {where} (no sample drawn)",
                            tokens=tokens, targets=targets)


def generate(model, prompt: str | Tensor, max_new_tokens: int = 200, temperature: float = 0.8,
             top_k: int | None = None, seed: int = 0, state: dict | None = None) -> str | Tensor:
    """Continue ``prompt`` by ``max_new_tokens`` tokens.

    ``prompt``: text (returns the continuation as text) or token ids (T,) or (B, T) (returns
    the new ids (B, N)). The prompt must be non-empty: the first new token is sampled from
    the logits after its last token. ``state``: where the prompt's streams go on from (default
    a fresh state; e.g. ``model.next_sequence(s, B)`` of an earlier call's state ``s``, so
    ``lifetime: stream`` levels generate with what they learned from earlier text). The model
    is put in eval mode for the call and its mode restored afterwards.
    """
    _check(max_new_tokens, temperature, top_k)
    tokens = _encode(model, prompt)
    if tokens.shape[1] == 0:
        raise GenerateError("the prompt is empty: give at least one token (e.g. a newline)")
    if state is not None and (not isinstance(state, dict) or state.get("pos") != 0):
        raise GenerateError("state: give a model state at the start of a sequence (model.init_state(B) or "
                            "model.next_sequence(state, B)), whose 'pos' is 0")
    rows = {t.shape[0] for layer in (state or {}).values() if isinstance(layer, dict)
            for t in layer.values() if isinstance(t, Tensor) and t.dim() > 0}
    if rows and rows != {tokens.shape[0]}:
        raise GenerateError(f"state: it holds {sorted(rows)} rows, the prompt {tokens.shape[0]} "
                            "(build it with the prompt's batch size)")
    was_training = model.training
    model.eval()
    try:
        new = _decode(model, tokens, max_new_tokens, temperature, top_k, seed, state)
    finally:
        model.train(was_training)
    if isinstance(prompt, str):
        return _tokenizer(model).decode(new[0])
    return new
