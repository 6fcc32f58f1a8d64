"""Shared helpers of the tests on models compiled from random and minimal specs
(``test_generated_properties.py``, ``test_generated_regressions.py``); not collected.

Notation: B batch, T tokens, V vocabulary (256).
"""
from __future__ import annotations

import importlib.util
import re
import tempfile
import textwrap
import uuid
from pathlib import Path

import torch
import yaml
from hypothesis import event, note, reject, settings
from hypothesis import strategies as st

import nlc
from nlc.errors import NLCError, SpecError
from tests.runnable_specs import TINY_GRID

B, VOCAB = 2, 256
seeds = st.integers(0, 2**16)
# longer than TINY_GRID: a draw's sequence crosses the boundary of its longest chunk or period
lengths = st.integers(TINY_GRID + 1, TINY_GRID + 8)

# a task-driven CMS level: CMS % (period, extra fields)
CMS = "{type: mlp, period: %d, objective: {kind: task}, update: {rule: gd, lr: 0.01}%s}"


def examples(ci: int) -> int:
    """``ci`` examples under the ``ci`` profile (tests/conftest.py: 20 by default), scaled
    with the loaded profile's ``max_examples`` (``HYPOTHESIS_PROFILE=dev``: 10x)."""
    return max(1, ci * settings.default.max_examples // 20)



def dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def spec(text: str) -> str:
    return textwrap.dedent(text)


def tokens(length: int, seed: int, batch: int = B) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def next_tokens(x: torch.Tensor) -> torch.Tensor:
    return torch.roll(x, -1, 1)


def assert_clear_refusal(data: dict, err: BaseException) -> None:
    """A deliberate refusal: an NLCError (not a spec error: the spec is valid) locating the
    layer in the YAML, whose cause is a deliberate ValueError / NotImplementedError (not a
    crash) naming a level of the spec."""
    assert isinstance(err, NLCError) and not isinstance(err, SpecError), \
        f"not a located nlc error: {type(err).__name__}: {err}"
    message = str(err)
    assert re.search(r"<text>:\d+", message), f"no YAML line in: {message}"
    cause = err.__cause__
    assert cause is None or type(cause) in (ValueError, NotImplementedError), \
        f"the runtime crashed instead of refusing: {type(cause).__name__}: {cause}"
    named = set(re.findall(r"level '([^']+)'", str(cause if cause is not None else err)))
    assert named & set(data["levels"]), f"no spec level named in: {cause or err}"


def assert_layers_apply_their_levels(model) -> None:
    for layer in model.ir.layers:
        owners = {getattr(m, "level") for m in getattr(model, layer.name).modules() if hasattr(m, "level")}
        assert set(layer.levels) <= owners, (layer.name, layer.levels, owners)


def check_logits(logits: torch.Tensor, length: int) -> None:
    assert logits.shape == (B, length, VOCAB)
    assert logits.dtype == torch.float32
    assert logits.isfinite().all()


def runs_or_is_refused_clearly(text: str) -> None:
    """Runs to finite logits with its layers wired to their levels, or is refused clearly."""
    data = yaml.safe_load(text)
    try:
        model = nlc.compile(text, seed=0)
        x = tokens(32, 0)
        logits, _ = model(x, targets=next_tokens(x))
    except Exception as err:  # noqa: BLE001 - classified below
        assert_clear_refusal(data, err)
        return
    check_logits(logits, 32)
    assert_layers_apply_their_levels(model)


def build(data: dict, seed: int = 0):
    """The compiled model of ``data`` (its state builds); a draw that the runtime refuses
    (clearly: asserted) is rejected."""
    text = dump(data)
    note(text)
    try:
        model = nlc.compile(text, seed=seed)
        model.init_state(B)
    except Exception as err:  # noqa: BLE001 - classified below
        note(f"refused: {type(err).__name__}: {err}")
        assert_clear_refusal(data, err)
        reject()
    return model


def record_coverage(model) -> None:
    """Hypothesis events (``--hypothesis-show-statistics``): what a draw exercised."""
    for name in sorted({type(m).__name__ for m in model.modules() if hasattr(m, "level")}):
        event(name)
    for kind in sorted({layer.kind for layer in model.ir.layers}):
        event(f"layer kind {kind}")
    event(f"teach period {model.teach_period}")


def stream(model, x: torch.Tensor, y: torch.Tensor, cuts: list[int], starts: torch.Tensor | None = None
           ) -> torch.Tensor:
    """The logits of ``x`` fed in segments ending at ``cuts``, the state carried along
    (``starts``: where documents begin, cut with them)."""
    state, parts = model.init_state(B), []
    for a, b in zip([0, *cuts], [*cuts, x.shape[1]]):
        logits, state = model(x[:, a:b], state, targets=y[:, a:b], starts=None if starts is None else starts[:, a:b])
        parts.append(logits)
    assert state["pos"] == x.shape[1]
    return torch.cat(parts, 1)


def forward_checking_teach_segments(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``model(x, targets=y)``'s logits. When the model has a teach loop (it calls every layer
    once per segment of ``teach_period`` tokens), also checks that each layer that does not
    teach gives what one call on its whole input gives."""
    if model.teach_period is None:
        return model(x, targets=y)[0]
    calls: dict[str, list] = {}
    handles = [getattr(model, name).register_forward_hook(
        lambda mod, args, out, name=name: calls.setdefault(name, []).append((args, out[0])))
        for name in model.LAYERS if name not in model.teach_layers]
    try:
        logits, _ = model(x, targets=y)
    finally:
        for handle in handles:
            handle.remove()
    for name, pieces in calls.items():
        (_, state, pos, *extra), _ = pieces[0]  # extra: a transfer edge's source tensor, per token
        joined = [torch.cat([args[i] for args, _ in pieces], 1) for i in range(3, 3 + len(extra))]
        with torch.no_grad():
            whole, _ = getattr(model, name)(torch.cat([args[0] for args, _ in pieces], 1), state, pos, *joined)
        torch.testing.assert_close(torch.cat([out for _, out in pieces], 1).detach(), whole,
                                   rtol=1e-4, atol=1e-4, msg=lambda m, name=name: f"layer {name}: {m}")
    return logits


def unsplit(model):
    """``model`` running every layer once per teach segment (no ``before_teach``)."""
    cls = type(model)
    model.before_teach = lambda x, state, pos: (x, state)
    model.from_teach = lambda x, state, pos: cls.from_teach(model, *cls.before_teach(model, x, state, pos), pos)
    return model


def import_fresh(source: str):
    """The module of ``source`` written to a file and imported under a new name."""
    name = f"nlc_emitted_{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.py"
        path.write_text(source, encoding="utf-8")
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    return module
