"""nlc.subnormals: the flag reaches torch's worker threads, and the model verbs set it."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from nlc.cli.app import MODEL_VERBS, app

PROBE = """
import torch
from nlc.subnormals import flush_subnormals
flushed = {call}
torch.set_num_threads(2)
a = torch.full((64, 256, 256), 1e-20)       # products 1e-40: subnormal fp32
print(flushed, int((torch.bmm(a, a) != 0).sum()), int(((a * 1e-20) != 0).sum()))  # batches split over threads
"""


@pytest.mark.parametrize("call, expect", [("flush_subnormals()", "True 0 0"),
                                          ("False", f"False {1 << 22} {1 << 22}")])
def test_flushing_before_the_thread_pool_zeroes_subnormals_on_every_thread(call: str, expect: str) -> None:
    if call != "False" and not torch.set_flush_denormal(False):  # the CPU cannot flush: nothing to test
        pytest.skip("this CPU has no flush-to-zero mode")
    out = subprocess.run([sys.executable, "-c", PROBE.format(call=call)], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.split() == expect.split()


def test_the_model_verbs_are_verbs() -> None:
    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert MODEL_VERBS <= names and "validate" not in MODEL_VERBS
