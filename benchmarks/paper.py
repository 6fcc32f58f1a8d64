"""The Nested Learning comparison at CPU scale: the same command as ``nlc bench paper``.

Run::

    python benchmarks/paper.py --jobs 2   # full: 8 models x 3 seeds + probes, about 50 min on 2 cores
    python benchmarks/paper.py --quick    # CI size, minutes
    python benchmarks/paper.py --smoke    # test size, seconds

Writes ``docs/results.md``, ``docs/results/paper.json`` and ``docs/results/*.png``; the
logic lives in :mod:`nlc.bench` (see :mod:`nlc.bench.run` for the protocol).
"""
from __future__ import annotations

import sys

from nlc.cli.app import app

if __name__ == "__main__":
    app(["bench", "paper", *sys.argv[1:]], prog_name="nlc")
