"""Whole-schema fuzz: validation equals capability.

Every draw of :func:`tests.schema_strategies.fuzz_cases` (the whole JSON schema walked, wild
values included; bundled specs and valid draws mutated; plain valid draws) must end in one
of two ways:

* ``REFUSED``: ``nlc.validate`` returns no spec, and every error names a file and a line
  (an override names its ``<override N: ...>`` origin instead of a line);
* ``OK``: the spec compiles and one training step runs at a small size (batch 2, at most 32
  tokens; width, hidden sizes, repeats, batch and sequence length shrunk as overrides where
  the draw did not make them huge on purpose, see :func:`shrunk`): forward with targets,
  finite cross-entropy, backward with finite gradients, one step of the outer levels with
  finite parameters.

``SKIPPED_BIG`` (valid, within ``nlc.limits`` but too large to run in a test) is counted,
not failed. Every other ending is a failure class: ``UNCAUGHT`` (an exception escaped
validation), ``UNLOCATED`` (refused without a file and line), ``ERROR_AFTER_VALIDATION``
(any exception from size estimate, compile, forward, backward or the optimizer step of a
spec the validator accepted, ``NotImplementedError`` and located ``NLCError`` included),
``NONFINITE`` (loss, gradients or parameters not finite after step 0 of a valid spec),
``HANG`` (over :data:`HANG_S` seconds, by ``signal.alarm``) and ``UNBOUNDED`` (a valid spec
whose estimated size, :func:`estimate_bytes`, exceeds ``nlc.limits.current().model_bytes``:
compiling it would allocate without bound).

A failure is raised as an exception class of its own per signature (class, stage,
exception, innermost nlc frame), so hypothesis shrinks and reports each distinct failure.
The default run draws :data:`FAST_EXAMPLES` derandomized examples; ``-m slow`` draws 10,000,
classifies them all, writes the counts per class to ``$NLC_FUZZ_REPORT`` (JSON) and asserts
no failure. ``python -m tests.security.test_fuzz --examples N`` does the same from a shell
and then shrinks one reproducer per failure signature.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import tempfile
import traceback
from collections import Counter
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed

import nlc
from nlc import limits
from nlc.graph import sizes
from nlc.spec import spec_to_data
from tests.schema_strategies import FuzzCase, fuzz_cases

HANG_S = 20  # one example, validation to optimizer step
RUN_BYTES = 64 * 2**20  # the largest (estimated) model this test runs
B, T_MAX = 2, 32
FAST_EXAMPLES = 80
PASSING = ("REFUSED", "OK", "SKIPPED_BIG")
FAILURES = ("UNCAUGHT", "UNLOCATED", "ERROR_AFTER_VALIDATION", "NONFINITE", "HANG", "UNBOUNDED")

OUTCOMES: Counter = Counter()
"""Outcome class -> count, over every example this process classified."""


class Hang(BaseException):
    """Raised by the alarm; a BaseException so no ``except Exception`` in nlc swallows it."""


@dataclass
class Outcome:
    cls: str
    stage: str = ""
    error: BaseException | None = None
    case: FuzzCase | None = None
    detail: str = ""
    tb: list[str] = field(default_factory=list)

    @property
    def signature(self) -> str:
        """What tells two failures apart: class, stage, the root exception's type and its
        innermost nlc frame (a located NLCError wraps the real error as its cause)."""
        root = self.error
        while root is not None and root.__cause__ is not None:
            root = root.__cause__
        frames = traceback.extract_tb(root.__traceback__) if root is not None else []
        frame = next((f"{os.path.relpath(f.filename)}:{f.name}" for f in reversed(frames)
                      if "/nlc/" in f.filename), "")
        return f"{self.cls}/{self.stage}/{type(root).__name__ if root else ''}/{frame}"

    def report(self) -> str:
        tail = "".join(traceback.format_exception(self.error)[-6:]) if self.error is not None else ""
        return f"{self.cls} at {self.stage}: {self.detail}\n{tail}\n{self.case!r}"


@contextlib.contextmanager
def time_limit(seconds: int):
    def ring(signum, frame):
        raise Hang(f"over {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def estimate_bytes(spec, batch: int | None = None) -> int:
    """fp32 bytes of the parameters plus the in-context state of one batch, from the spec alone
    (nlc.graph.sizes' counts; the same quantity ``Limits.model_bytes`` bounds)."""
    level = sizes.level_sizes(spec)
    params = sum(s.total_params for s in level.values()) + sum(sizes.model_params(spec).values())
    state = sum(s.total_state for s in level.values())
    return 4 * (params + (spec.train.batch if batch is None else batch) * state)


# --------------------------------------------------------------------------- the run half

SHRINK = {"width": 64, "hidden": 32, "expansion": 4, "repeat": 2, "tokens": 16, "seq_len": 64, "batch": B}


def shrunk(spec, wild: frozenset[str]):
    """``spec`` at a size a test runs: the fields of :data:`SHRINK` capped (the width at the
    smallest multiple of 16 that every head count divides), except where the draw was wild.
    The capped spec must validate too; if it does not, the spec is run as it is."""
    data = spec_to_data(spec)

    def cap(obj: dict, path: str) -> None:
        for key, value in list(obj.items()):
            here = f"{path}.{key}" if path else key
            if isinstance(value, dict):
                cap(value, here)
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, dict):
                        cap(item, f"{here}.{i}")
            elif key in SHRINK and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and value > SHRINK[key] and here not in wild:
                obj[key] = SHRINK[key] if key != "width" else _small_width(data)

    cap(data, "")
    small, _ = nlc.validate(_dump(data))
    return small if small is not None else spec


def _small_width(data: dict) -> int:
    heads = [data["model"]["heads"]] + [lv.get("heads") or 1 for lv in data["levels"].values()]
    return next((w for w in range(16, 1025, 16) if all(w % h == 0 for h in heads)), data["model"]["width"])


def _dump(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def run_step(spec) -> Outcome:
    """Compile ``spec`` and run one training step (see the module docstring)."""
    from nlc.training.optim import OuterLevels

    stage = "compile"
    try:
        model = nlc.compile(spec, seed=0)
        stage = "forward"
        t = min(spec.train.seq_len, T_MAX)
        x = torch.randint(0, spec.model.vocab, (B, t + 1), generator=torch.Generator().manual_seed(0))
        inputs, targets = x[:, :-1], x[:, 1:]
        bf16 = spec.train.dtype == "bfloat16"
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            logits, _ = model(inputs, model.init_state(B), targets=targets)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        if not math.isfinite(loss.item()):
            return Outcome("NONFINITE", stage, detail=f"loss {loss.item()}")
        stage = "backward"
        loss.backward()
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all()]
        if bad:
            return Outcome("NONFINITE", stage, detail=f"gradients of {bad[:3]}")
        stage = "optimizer"
        OuterLevels(model, spec.train.steps).step(1)
        bad = [n for n, p in model.named_parameters() if not p.isfinite().all()]
        if bad:
            return Outcome("NONFINITE", stage, detail=f"parameters {bad[:3]} after one step")
    except Hang:
        raise
    except Exception as err:  # noqa: BLE001 - every exception after validation is a failure
        return Outcome("ERROR_AFTER_VALIDATION", stage, err, detail=f"{type(err).__name__}: {err}"[:300])
    return Outcome("OK", "step", detail=f"loss {loss.item():.3f}")


# --------------------------------------------------------------------------- classify

def _located(issue) -> bool:
    return bool(issue.file) and (issue.line is not None or issue.file.startswith("<override"))


def classify(case: FuzzCase) -> Outcome:
    """The outcome class of one example (see the module docstring)."""
    stage = "validate"
    try:
        with time_limit(HANG_S):
            try:
                spec, issues = nlc.validate(case.text)
            except Hang:
                raise
            except Exception as err:  # noqa: BLE001 - classified
                return Outcome("UNCAUGHT", stage, err, case, f"{type(err).__name__}: {err}"[:300])
            if spec is None:
                errors = [i for i in issues if i.severity == "error"]
                unlocated = [i.format() for i in errors if not _located(i)]
                if not errors or unlocated:
                    return Outcome("UNLOCATED", stage, case=case, detail=str(unlocated[:3] or "no error given"))
                return Outcome("REFUSED", stage, case=case, detail=errors[0].format()[:200])
            stage = "size"
            try:
                size = estimate_bytes(spec)
                if size > limits.current().model_bytes:
                    return Outcome("UNBOUNDED", stage, case=case,
                                   detail=f"estimated {size / 2**30:.1f} GiB > model_bytes "
                                          f"{limits.current().model_bytes / 2**30:.1f} GiB, accepted")
                stage = "shrink"
                small = shrunk(spec, case.wild)
                if estimate_bytes(small, B) > RUN_BYTES:
                    return Outcome("SKIPPED_BIG", stage, case=case, detail=f"{size} bytes")
            except Hang:
                raise
            except Exception as err:  # noqa: BLE001 - a valid spec must not break the estimate
                return Outcome("ERROR_AFTER_VALIDATION", stage, err, case, f"{type(err).__name__}: {err}"[:300])
            outcome = run_step(small)
            outcome.case = case
            return outcome
    except Hang as err:
        return Outcome("HANG", stage, err, case, f"over {HANG_S} s")


_FAILURE_TYPES: dict[str, type] = {}


def failure(outcome: Outcome) -> AssertionError:
    """An exception of a class of its own per signature: hypothesis shrinks each apart."""
    sig = outcome.signature
    if sig not in _FAILURE_TYPES:
        _FAILURE_TYPES[sig] = type(f"Fuzz_{outcome.cls}_{len(_FAILURE_TYPES)}", (AssertionError,), {})
    return _FAILURE_TYPES[sig](f"[{sig}]\n{outcome.report()}")


def check(case: FuzzCase) -> None:
    outcome = classify(case)
    OUTCOMES[outcome.cls] += 1
    if outcome.cls not in PASSING:
        raise failure(outcome)


FUZZ_SETTINGS = dict(deadline=None, database=None, print_blob=False,
                     suppress_health_check=list(HealthCheck))


# --------------------------------------------------------------------------- tests

@pytest.fixture(scope="module", autouse=True)
def _print_counts():
    yield
    print(f"\nfuzz outcomes: {dict(OUTCOMES)}")


@settings(max_examples=FAST_EXAMPLES, derandomize=True, **FUZZ_SETTINGS)
@given(case=fuzz_cases())
def test_every_draw_is_refused_at_a_line_or_trains_finitely(case):
    check(case)


def collect(examples: int, seed: int | None = None) -> tuple[Counter, dict[str, Outcome]]:
    """Classify ``examples`` draws without stopping: counts per class, one outcome per
    failure signature."""
    counts: Counter = Counter()
    first: dict[str, Outcome] = {}

    @settings(max_examples=examples, derandomize=seed is None, phases=["generate"], **FUZZ_SETTINGS)
    @given(case=fuzz_cases())
    def record(case):
        outcome = classify(case)
        counts[outcome.cls] += 1
        counts[f"origin:{case.origin.split(':')[0]}:{outcome.cls}"] += 1
        if outcome.cls not in PASSING:
            first.setdefault(outcome.signature, outcome)

    if seed is not None:  # a shard of a larger run: its own reproducible stream of draws
        record = hypothesis_seed(seed)(record)
    record()
    return counts, first


def write_summary(counts: Counter, first: dict[str, Outcome], path: str) -> dict:
    summary = {"counts": {k: counts[k] for k in sorted(counts)},
               "failures": sum(counts[c] for c in FAILURES),
               "signatures": {sig: o.report()[:3000] for sig, o in first.items()}}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    return summary


@pytest.mark.slow
def test_ten_thousand_draws():
    counts, first = collect(10_000)
    path = os.environ.get("NLC_FUZZ_REPORT", os.path.join(tempfile.gettempdir(), "nlc_fuzz_report.json"))
    summary = write_summary(counts, first, path)
    print(f"\nfuzz outcomes: {summary['counts']} (report: {path})")
    assert summary["failures"] == 0, "\n\n".join(o.report() for o in first.values())[:20000]


# --------------------------------------------------------------------------- shell

def shrink_reproducers(examples: int) -> list[str]:
    """One shrunk reproducer per failure signature (hypothesis' multi-bug shrinking)."""
    @settings(max_examples=examples, derandomize=True, report_multiple_bugs=True, **FUZZ_SETTINGS)
    @given(case=fuzz_cases())
    def shrinking(case):
        check(case)

    try:
        shrinking()
    except BaseExceptionGroup as group:
        return [str(e) for e in group.exceptions]
    except AssertionError as err:
        return [str(err)]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=None,
                        help="draw a reproducible stream of its own (shards of a run side by side)")
    parser.add_argument("--shrink", type=int, default=0, help="examples for the shrinking pass (0: none)")
    parser.add_argument("--report", default=os.environ.get("NLC_FUZZ_REPORT", "nlc_fuzz_report.json"))
    parser.add_argument("--reproducers", default=None, help="write the shrunk reproducers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    counts, first = collect(args.examples, args.seed)
    summary = write_summary(counts, first, args.report)
    print(json.dumps(summary["counts"], indent=1))
    for sig in first:
        print("FAILURE", sig)
    if args.shrink:
        found = shrink_reproducers(args.shrink)
        text = "\n\n==========\n\n".join(found)
        if args.reproducers:
            with open(args.reproducers, "w", encoding="utf-8") as f:
                f.write(text)
        else:
            print(text)
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
