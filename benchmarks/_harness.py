"""Shared benchmark plumbing: timing, deadlines, memory measurement, FLOP helpers, tables.

Timing (:func:`time_call`): ``warmup`` untimed calls, then timed calls with
``time.perf_counter`` until at least ``min_reps`` calls *and* ``budget_s`` seconds
(or ``max_reps`` calls) are done; the reported time is the median. The median process CPU
time is kept too: CPU / wall near the thread count means the threads had the cores; well
below it means other processes competed for them (the wall times are then inflated).

Memory, two numbers per measured call (both exclude the inputs and parameters that
exist before the call, and both are in bytes):

* :func:`peak_alloc_bytes` -- the high-water mark of CPU allocator bytes held during one
  call, read from ``torch.profiler`` with ``profile_memory=True``: every allocation and
  free made during the call is a ``[memory]`` event; the running sum of their sizes, in
  time order, peaks at the call's transient peak (for fwd+bwd: activations + gradients +
  workspaces). Works for eager and inductor-compiled code alike (inductor buffers come
  from the same allocator).
* :func:`saved_tensor_bytes` -- bytes of the distinct storages autograd saves for the
  backward during one forward (``torch.autograd.graph.saved_tensors_hooks``; a storage
  saved twice, or a view of an already saved storage, counts once; parameters and inputs
  count too since autograd holds them). Eager only: a compiled graph saves what its own
  partitioner chose.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import os
import signal
import statistics
import tempfile
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import torch
from torch.profiler import ProfilerActivity, profile

from nlc.subnormals import flush_subnormals

MiB = float(1 << 20)


# ------------------------------------------------------------------------------ memory guard
def estimate_peak(peaks: list[tuple[int, float]], T: int) -> float:
    """Bytes a row at length ``T`` may hold, from the ``(T', peak bytes)`` of the same rule's
    rows measured so far: the largest peak per token, scaled to ``T`` and doubled (the memory
    profiler's own records, and freed memory the allocator has not returned); 0 without one."""
    return 2.0 * T * max(peak / seq for seq, peak in peaks) if peaks else 0.0


def available_bytes() -> float:
    """MemAvailable of /proc/meminfo (infinite where there is none): what this process can
    still take (its own resident memory already counted as used), after handing the memory
    freed by earlier rows back to the system (:func:`release_memory`)."""
    release_memory()
    try:
        with open("/proc/meminfo") as f:
            return next(float(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return math.inf


def release_memory() -> None:
    """Collect garbage and return the C heap's free pages to the system (glibc's
    ``malloc_trim``; a no-op elsewhere): without it, a run's resident memory keeps the high
    water mark of its largest row and MemAvailable understates what the next row can use."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


# ------------------------------------------------------------------------------ FLOPs
def mm(m: float, n: float, k: float) -> float:
    """FLOPs of an (m x k) @ (k x n) matmul: 2 m n k (one multiply + one add)."""
    return 2.0 * m * n * k


def fmt_si(x: Optional[float], unit: str = "") -> str:
    if x is None or not math.isfinite(x):
        return "-"
    for scale, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{p}{unit}"
    return f"{x:.3g}{unit}"


# ------------------------------------------------------------------------------ timing
def time_call(fn: Callable[[], Any], *, warmup: int = 1, min_reps: int = 3,
              max_reps: int = 20, budget_s: float = 1.0) -> dict[str, Any]:
    """Median wall time of ``fn()`` (seconds) after ``warmup`` untimed calls.

    Runs until ``min_reps`` timed calls are done and either ``budget_s`` seconds of timed
    calls have elapsed or ``max_reps`` calls are done.
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    cpu: list[float] = []
    spent = 0.0
    while len(times) < min_reps or (spent < budget_s and len(times) < max_reps):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        cpu.append(time.process_time() - c0)
        times.append(dt)
        spent += dt
    return {"median_s": statistics.median(times), "min_s": min(times), "reps": len(times),
            "cpu_s": statistics.median(cpu), "times_s": times}


class OutOfTime(Exception):
    """Raised (from SIGALRM) inside a body that runs past its :func:`deadline`; ``hit``
    stays True afterwards, so code that wraps exceptions (torch.compile) cannot hide it."""

    hit = False


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`OutOfTime` in the body after ``seconds`` (SIGALRM; main thread of a
    POSIX process only; elsewhere, or for an infinite budget, no limit). Python-level loops
    (chunk loops, per-token references) see the signal within one op."""
    usable = (math.isfinite(seconds) and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def handler(signum, frame):
        OutOfTime.hit = True
        raise OutOfTime()

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------------------ memory
def _profile_events(prof) -> tuple[list[tuple[float, int]], Optional[int]]:
    """From a finished profile: (time, signed bytes) of every CPU allocation / free, and the
    number of outermost aten ops (an aten op called inside another one is not counted;
    None when unknown). Reads the profiler's event tree (fast; private API), else the
    exported chrome trace (allocations only)."""
    try:
        from torch._C._profiler import _EventType  # in the try: a private API that may move

        allocs, n_ops = [], 0
        stack = [(n, False) for n in prof.profiler.kineto_results.experimental_event_tree()]
        while stack:
            n, inside = stack.pop()
            if n.tag == _EventType.Allocation and n.extra_fields.device.type == "cpu":
                allocs.append((n.start_time_ns, int(n.extra_fields.alloc_size)))
            is_op = n.tag == _EventType.TorchOp and n.name.startswith("aten::")
            if is_op and not inside:
                n_ops += 1
            stack.extend((c, inside or is_op) for c in n.children)
        return allocs, n_ops
    except Exception:  # noqa: BLE001 -- private API moved: use the public trace
        pass
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            trace = json.load(f)
    finally:
        os.unlink(path)
    return [(e["ts"], int(e["args"]["Bytes"])) for e in trace.get("traceEvents", [])
            if e.get("name") == "[memory]" and e["args"].get("Device Type", 0) == 0], None


def profile_call(fn: Callable[[], Any]) -> dict[str, Optional[int]]:
    """One ``fn()`` under torch.profiler: ``peak_bytes`` held by allocations made during
    the call (None when the profiler recorded no memory events) and ``aten_ops`` (outermost
    aten ops executed: eager dispatch overhead and, on a busy machine, one OpenMP
    rendezvous each)."""
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events, n_ops = _profile_events(prof)
    peak = None
    if events:
        cur = peak = 0
        for _, nbytes in sorted(events, key=lambda e: e[0]):
            cur += nbytes
            peak = max(peak, cur)
    return {"peak_bytes": peak, "aten_ops": n_ops}


def peak_alloc_bytes(fn: Callable[[], Any]) -> Optional[int]:
    """Peak bytes held by allocations made during one ``fn()`` call (see profile_call)."""
    return profile_call(fn)["peak_bytes"]


def saved_tensor_bytes(forward: Callable[[], Any]) -> int:
    """Bytes of distinct storages saved for backward while running ``forward()`` (eager)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        try:
            st = t.untyped_storage()
            seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
        except (RuntimeError, NotImplementedError):  # e.g. tensors without storage
            seen[id(t)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return int(sum(seen.values()))


# ------------------------------------------------------------------------------ tables
def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Plain-text table; ``columns`` = [(key, header)], values already formatted strings."""
    cells = [[str(r.get(k, "")) for k, _ in columns] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h) in enumerate(columns)]
    line = "  ".join(h.ljust(w) for (_, h), w in zip(columns, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    for c in cells:
        out.append("  ".join(v.ljust(w) for v, w in zip(c, widths)))
    return "\n".join(out)


def finite_positive(values: Iterable[Any]) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


def add_subnormals_flag(ap: argparse.ArgumentParser) -> None:
    """``--keep-subnormals``: measure with subnormal floats kept (torch's default) instead of
    flushed to zero as nlc's commands run models (:mod:`nlc.subnormals`)."""
    ap.add_argument("--keep-subnormals", action="store_true",
                    help="keep subnormal floats (torch's default); default: flushed to zero as `nlc train` runs")


def apply_subnormals(keep: bool) -> bool:
    """Flush subnormals unless ``keep`` (call first in ``main``, before any tensor op: the
    flag reaches torch's worker threads only then); whether they are flushed."""
    return not keep and flush_subnormals()
