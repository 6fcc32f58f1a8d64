"""nlc models in EleutherAI's lm-evaluation-harness (``pip install 'nlc[lm-eval]'``).

Importing this module registers :class:`NLCLM` with lm-eval under the model name ``nlc``;
``pretrained`` is anything :func:`nlc.load` takes (a run folder, a checkpoint folder, a spec
file or a bundled name). lm-eval finds no plugin on its own, so its stock ``lm_eval`` command
does not know ``nlc``; run the harness through this module instead, with lm-eval's own
arguments::

    python -m nlc.lm_eval_adapter --model nlc --model_args pretrained=runs/hope \\
        --tasks lambada_openai

or from Python: ``import nlc.lm_eval_adapter`` then
``lm_eval.simple_evaluate(model="nlc", model_args="pretrained=runs/hope", tasks=[...])``.

Scoring is the model's own next-token distribution, as :func:`nlc.evaluate.lm.evaluate_lm`
runs it: each request is one sequence from ``model.init_state``, run with its targets (CMS
levels driven by the task loss learn causally from tokens already scored), one request at a
time (the state is per sequence). Text goes through the spec's tokenizer (UTF-8 bytes by
default). Requests:

* ``loglikelihood(context, continuation)``: the sum of log p(continuation token | all before)
  and whether greedy decoding would give the continuation; an empty context is conditioned
  on the prefix token (GPT-2's ``<|endoftext|>``, or a newline byte for the byte tokenizer);
* ``loglikelihood_rolling(text)``: log p of every token of ``text`` after the prefix token,
  in lm-eval's rolling windows of ``max_length`` tokens (each token predicted once);
* ``generate_until(context, {"until", "max_gen_toks"})``: greedy (:func:`nlc.generate.generate`
  at temperature 0), cut before the first stop string; sampling settings are ignored.

``device``: as :func:`nlc.load` (``cuda`` where there is none, lm-eval's command-line
default, means nlc's default device).
``max_length`` (default: the spec's ``train.seq_len``, the context the model was trained on)
bounds every forward: longer contexts keep their last tokens.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

try:
    import lm_eval.models  # noqa: F401 - the built-in models first: lm-eval loads them only into an empty registry
    from lm_eval.__main__ import cli_evaluate
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError:  # pragma: no cover - depends on the environment
    from .errors import NLCError

    raise NLCError("the lm-eval adapter needs the lm_eval package: pip install 'nlc[lm-eval]'") from None

from .data import get_tokenizer
from .generate import generate
from .training.loading import load

PREFIX_TOKEN = {"gpt2": 50256}  # <|endoftext|>; other tokenizers start from a newline


@register_model("nlc")
class NLCLM(LM):
    """An nlc model scored by lm-eval (see the module docstring)."""

    def __init__(self, pretrained: str, device: str | None = None, max_length: int | None = None,
                 batch_size: Any = None, **_: Any) -> None:
        super().__init__()
        if device and str(device).startswith("cuda") and not torch.cuda.is_available():
            device = None  # lm-eval's command line passes --device cuda by default: nlc's default device instead
        self.model = load(pretrained, device=device)
        self.tokenizer = get_tokenizer(self.model.spec.model.tokenizer)
        self.max_length = int(max_length) if max_length else self.model.spec.train.seq_len
        self.prefix_token = PREFIX_TOKEN.get(self.tokenizer.name, int(self.tokenizer.encode("\n")[0]))
        self._device = next(self.model.parameters()).device

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).tolist()

    @torch.no_grad()
    def _score(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        """log p(continuation | context) and whether it is the greedy continuation; the
        context is cut to its last tokens so the forward holds ``max_length`` tokens."""
        tokens = (context + continuation)[-(self.max_length + 1):]
        x = torch.tensor(tokens[:-1], device=self._device)[None]
        y = torch.tensor(tokens[1:], device=self._device)[None]
        logits, _ = self.model(x, self.model.init_state(1), targets=y)
        n = len(continuation)
        logp = F.log_softmax(logits[0, -n:].float(), dim=-1)
        target = y[0, -n:]
        return float(logp.gather(1, target[:, None]).sum()), bool((logp.argmax(-1) == target).all())

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        results = []
        for request in requests:
            context, continuation = request.args
            context_ids = self._encode(context) or [self.prefix_token]
            continuation_ids = self._encode(continuation)
            if not continuation_ids:
                results.append((0.0, True))
                continue
            result = self._score(context_ids, continuation_ids)
            self.cache_hook.add_partial("loglikelihood", (context, continuation), result)
            results.append(result)
        return results

    def loglikelihood_rolling(self, requests) -> list[float]:
        results = []
        for request in requests:
            (text,) = request.args
            windows = get_rolling_token_windows(self._encode(text), self.prefix_token, self.max_length, 1)
            total = sum(self._score(*make_disjoint_window(window))[0] for window in windows)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            results.append(total)
        return results

    def generate_until(self, requests) -> list[str]:
        results = []
        for request in requests:
            context, settings = request.args
            until = settings.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            new_tokens = int(settings.get("max_gen_toks", 256))
            prompt = (self._encode(context) or [self.prefix_token])[-self.max_length:]
            ids = generate(self.model, torch.tensor(prompt), max_new_tokens=new_tokens, temperature=0)
            text = self.tokenizer.decode(ids[0])
            cut = min((text.index(stop) for stop in until if stop and stop in text), default=len(text))
            results.append(text[:cut])
            self.cache_hook.add_partial("generate_until", (context, settings), text[:cut])
        return results


def main() -> None:
    """lm-eval's command line with ``nlc`` registered (``python -m nlc.lm_eval_adapter``)."""
    cli_evaluate()


if __name__ == "__main__":
    main()
