"""A tiny search spec (2 training steps per trial) and helpers shared by the search tests."""
from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[2]

TINY_SEARCH = """\
nlc: 1
extends: {base}
name: tiny_search
levels:
  attn: {{type: attention}}
  ffn: {{type: mlp, expansion: 2}}
model:
  width: 16
  heads: 2
  blocks: [{{layers: [attn, ffn]}}]
train: {{steps: 2, batch: 2, seq_len: 16, eval_every: 1, eval_batches: 1}}
search:
  trials: 4
  objectives: {objectives}
  prune: none
  space:
    levels.outer.lr: {{loguniform: [1.0e-4, 1.0e-2]}}
    levels.ffn.expansion: {{choice: [1, 2]}}
"""


def write_tiny_search(folder: Path, objectives: str = "[val_bpb]", extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny_search.yaml"
    text = TINY_SEARCH.format(base=ROOT / "specs" / "base" / "small.yaml", objectives=objectives)
    path.write_text(text + extra, encoding="utf-8")
    return path


def states(study: optuna.Study) -> list[TrialState]:
    return [t.state for t in study.get_trials()]
