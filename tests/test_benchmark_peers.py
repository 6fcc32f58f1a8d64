"""Smoke test of benchmarks/peers.py: ``--quick`` in process (toy shapes). Every nlc row
measures a finite positive rate and is its group's ratio base; a peer's rows appear exactly
when the peer is installed (the optional ``peers`` extra), and the table names a missing one."""
from __future__ import annotations

import json
import math

from benchmarks import peers


def test_quick_run_measures_nlc_and_every_installed_peer(tmp_path):
    out = tmp_path / "peers.json"
    result = peers.run(quick=True, out=str(out))
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(result["rows"], default=str))
    rows = result["rows"]
    assert all("error" not in r for r in rows), [r for r in rows if "error" in r]
    for r in rows:
        assert math.isfinite(r["tok_s"]) and r["tok_s"] > 0, r
    groups = {r["group"] for r in rows}
    assert groups == {"titans block T=32", "hope block T=32", "hope in-context T=32",
                      "titans MAC step T=32", "hope step T=32"}
    for group in groups:
        base = [r for r in rows if r["group"] == group and r["impl"].startswith("nlc")]
        assert base and base[0]["x_nlc"] == 1.0
    for peer in peers.PEERS:
        present = any(r["impl"].startswith(peer) for r in rows)
        assert present == peers.installed(peer)
        assert ("not installed (rows skipped): " in peers.table(result)) == (
            not all(peers.installed(p) for p in peers.PEERS))
    step = [r for r in rows if "step" in r["group"]]
    assert all(r["params"] > 0 for r in step)
