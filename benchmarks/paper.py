"""The Nested Learning comparison at CPU scale: the same command as ``nlc bench paper``.

Run::

    python benchmarks/paper.py --jobs 2 --dry-run   # full: the plan and its expected wall time
    python benchmarks/paper.py --quick              # CI size, minutes
    python benchmarks/paper.py --smoke              # test size, seconds

Writes into its run folder (``--out``, default ``runs/paper/``: ``results.md``,
``results/paper.json``, the figures); ``--report docs/results.md`` puts the report there.
The logic lives in :mod:`nlc.bench` (see :mod:`nlc.bench.run` for the protocol).
"""
from __future__ import annotations

import sys

from nlc.cli.app import app

if __name__ == "__main__":
    app(["bench", "paper", *sys.argv[1:]], prog_name="nlc")
