"""``nlc.train``: the outer training loop.

Optimizer step s (1-based) of a run seeded with ``seed``:

1. the global batch ``x, y`` (B, T) is ``nlc.data.sample_batch(train, B, T, g)`` with
   ``g`` seeded by ``step_seed(seed, s)`` (reproducible without replaying steps < s);
   under ``torchrun`` each rank keeps its B/N rows (:mod:`nlc.train.distributed`);
2. every sequence starts from ``model.init_state``; ``logits, _ = model(x, state, y)``:
   in-context and CMS levels update inside this forward (under autocast when
   ``train.dtype`` is bfloat16);
3. ``loss = CE(logits, y)`` (mean next-token cross-entropy, nats), ``loss.backward()``;
4. the optimizer levels due at s step (:class:`nlc.train.optim.OuterLevels`), the
   others keep accumulating;
5. a ``train`` record goes to ``metrics.jsonl``; every ``eval_every`` steps and at the
   end validation bpb on ``eval_batches`` fixed batches (:func:`nlc.evaluate.lm.evaluate_lm`)
   and ``curves.png``; every ``checkpoint_every`` steps and at the end a checkpoint.

Bits per byte: ``bpb = loss / (ln 2 · ρ)`` with ρ the bytes per token of the split (1
for the byte tokenizer).

Resume: ``resume=True`` continues from ``out/checkpoint`` (weights, optimizer state,
accumulating gradients, RNG states, step); as the batch of a step depends only on (seed,
step), a resumed run ends with the same weights as an uninterrupted one (bit for bit on
CPU). Without ``resume`` an existing checkpoint in ``out`` is never overwritten.
"""
from __future__ import annotations

import difflib
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..data import sample_batch
from ..evaluate.lm import autocast, evaluate_lm
from ..spec.load import spec_to_yaml
from . import checkpoint as ckpt
from .config import TrainConfig, TrainResult, step_seed
from .distributed import World, join_world
from .inputs import TrainData, build_model, data_name, run_spec, train_data
from .metrics import MetricsLog
from .optim import OuterLevels
from .plots import plot_curves
from .progress import TrainProgress


def train(spec_or_model_or_path: Any, data: Any = None, out: str | Path = "runs/nlc", steps: int | None = None,
          overrides: tuple[str, ...] | list[str] = (), resume: bool = False, progress: bool = True,
          seed: int | None = None, *, checkpoint_every: int | None = None, keep_checkpoints: bool = False,
          device: str | torch.device | None = None,
          on_eval: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train a spec (path, YAML text or :class:`~nlc.spec.Spec`) or a compiled model.

    ``data``: a corpus name (default: the spec's ``train.data``) or an object with
    ``train``/``val`` token tensors and ``vocab``. ``steps`` and ``seed`` override the
    spec's ``train.steps`` / ``train.seed``. Writes ``metrics.jsonl``, ``curves.png`` and
    ``checkpoint/`` under ``out``. ``on_eval(step, val_record)`` runs after each
    validation on rank 0; an exception it raises (e.g. ``optuna.TrialPruned``) stops the
    run and propagates. See the module docstring for the algorithm.
    """
    spec = run_spec(spec_or_model_or_path, tuple(overrides), steps=steps, seed=seed, data_name=data_name(data))
    config = TrainConfig.from_spec(spec, out, checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
                                   progress=progress, device=device)
    world = join_world(config.device)
    try:
        return _Run(spec_or_model_or_path, spec, config, train_data(data, spec), world, resume).run(on_eval)
    finally:
        world.close()


class _Run:
    """One run's state; :meth:`run` executes it."""

    def __init__(self, given: Any, spec, config: TrainConfig, data: TrainData, world: World, resume: bool) -> None:
        self.spec, self.config, self.data, self.world = spec, config, data, world
        self.spec_sha256 = ckpt.spec_hash(spec)
        self.model = build_model(given, spec, world.device(config.device))
        self.model.train()
        self.outer = OuterLevels(self.model, config.steps)
        config.out.mkdir(parents=True, exist_ok=True)
        if world.is_main:
            ckpt.recover(config.out)  # finish what a killed save left
        self.log = MetricsLog(config.out / "metrics.jsonl", write=world.is_main)
        self.step, self.elapsed = 0, 0.0
        resumed = resume and self._resume()
        if not resumed:
            self._refuse_overwrite()
        self.log.start(self.step if resumed else None)
        self.net = world.wrap(self.model)  # after loading: every rank starts from the same weights

    # -- resume ----------------------------------------------------------------------
    def _refuse_overwrite(self) -> None:
        try:
            meta = ckpt.read_meta(self.config.out)
        except ckpt.CheckpointError:
            return
        raise ckpt.CheckpointError(f"{self.config.out} already holds a checkpoint (step {meta['step']}); "
                                   "pass --resume (resume=True) to continue it, or choose another --out")

    def _resume(self) -> bool:
        """Load ``out/checkpoint`` if there is one (False: nothing to resume, start at step 0)."""
        try:
            meta = ckpt.read_meta(self.config.out)
        except ckpt.CheckpointError:
            return False
        if meta["spec_sha256"] != self.spec_sha256:
            raise ckpt.CheckpointError(
                f"cannot resume {self.config.out / ckpt.LATEST}: it was trained with spec sha256 "
                f"{meta['spec_sha256']}, but the spec given hashes to {self.spec_sha256}. Resume with the same "
                f"spec, overrides, --steps, --seed and --data, or train into another --out.\n"
                + _spec_diff(meta["spec_yaml"], spec_to_yaml(self.spec)))
        if meta["data"]["sha256"] and self.data.sha256 and meta["data"]["sha256"] != self.data.sha256:
            raise ckpt.CheckpointError(
                f"cannot resume {self.config.out}: its data {meta['data']['name']!r} had sha256 "
                f"{meta['data']['sha256']}, the data given has {self.data.sha256} "
                "(use the same corpus or another --out)")
        ckpt.load_weights(self.model, self.config.out)
        self.outer.load_state_tensors(ckpt.load_optimizer_state(self.config.out))
        ckpt.set_rng_state(meta["rng"])
        self.step, self.elapsed = meta["step"], meta["elapsed"]
        return True

    # -- the loop --------------------------------------------------------------------
    def run(self, on_eval: Callable[[int, dict], None] | None = None) -> TrainResult:
        config = self.config
        with TrainProgress(config.steps, self.step, enabled=config.progress and self.world.is_main,
                           title=self.spec.name or "train") as bar:
            if self.step:
                bar.note(f"resumed {config.out / ckpt.LATEST} at step {self.step}")
            while self.step < config.steps:
                self.step += 1
                record = self._train_step()
                bar.update(record)
                if self.step % config.eval_every == 0 or self.step == config.steps:
                    val = self._validate()
                    if val is not None:
                        bar.note(f"step {self.step}: val loss {val['loss']:.4f}  bpb {val['bpb']:.4f}")
                        if on_eval is not None:
                            on_eval(self.step, val)
                if self.step % config.checkpoint_every == 0 or self.step == config.steps:
                    self._checkpoint()
        vals = self.log.of_kind("val")
        return TrainResult(model=self.model, metrics=list(self.log.records),
                           val_bpb=vals[-1]["bpb"] if vals else math.nan,
                           checkpoint=config.out / ckpt.LATEST, out=config.out)

    def _train_step(self) -> dict:
        config, start = self.config, time.perf_counter()
        generator = torch.Generator().manual_seed(step_seed(config.seed, self.step))
        x, y = sample_batch(self.data.train, config.batch, config.seq_len, generator)
        device = self.model.embed.weight.device
        x, y = self.world.shard(x).to(device), self.world.shard(y).to(device)
        with autocast(x.device, config.autocast_dtype):
            logits, _ = self.net(x, self.model.init_state(x.shape[0]), targets=y)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        self.outer.step(self.step)
        loss_value = self.world.mean(loss.detach()).item()
        seconds = time.perf_counter() - start
        self.elapsed += seconds
        record = {"kind": "train", "step": self.step, "loss": loss_value,
                  "bpb": loss_value / (math.log(2) * self.data.train_bytes_per_token),
                  "lr": self.outer.lrs(self.step), "tokens_per_s": config.batch * config.seq_len / seconds,
                  "elapsed": self.elapsed}
        self.log.log(record)
        return record

    def _validate(self) -> dict | None:
        """Validation bpb (rank 0 only), logged, and the curves redrawn."""
        if not self.world.is_main:
            return None
        config, start = self.config, time.perf_counter()
        result = evaluate_lm(self.model, self.data.val, config.batch, config.seq_len, config.eval_batches,
                             step_seed(config.seed, 0), bytes_per_token=self.data.val_bytes_per_token,
                             autocast_dtype=config.autocast_dtype)
        self.elapsed += time.perf_counter() - start
        record = {"kind": "val", "step": self.step, **result, "elapsed": self.elapsed}
        self.log.log(record)
        plot_curves(self.log.records, config.out / "curves.png",
                    title=f"{self.spec.name or 'model'} on {self.data.name}")
        return record

    def _checkpoint(self) -> None:
        if not self.world.is_main:
            return
        schedule = self.model.schedule
        meta = {
            "step": self.step, "steps": self.config.steps, "seed": self.config.seed, "elapsed": self.elapsed,
            "spec_sha256": self.spec_sha256, "spec_yaml": spec_to_yaml(self.spec),
            "schedule": {"updates": {n: lv.updates(self.step) for n, lv in self.outer.levels.items()},
                         "accumulated_steps": {n: self.step % k for n, k in schedule.step_periods.items()},
                         "next_lr": self.outer.lrs(self.step + 1)},
            "rng": ckpt.rng_state(),
            "data": {"name": self.data.name, "sha256": self.data.sha256},
            "world_size": self.world.size, "versions": ckpt.versions(),
        }
        ckpt.save_checkpoint(self.config.out, self.model, self.outer.state_tensors(), meta,
                             keep=self.config.keep_checkpoints)


def _spec_diff(stored: str, given: str, limit: int = 20) -> str:
    """The first lines of a unified diff between the checkpoint's spec and the given one."""
    lines = list(difflib.unified_diff(stored.splitlines(), given.splitlines(), "checkpoint spec", "given spec",
                                      lineterm="", n=0))
    shown = lines[:limit] + ([f"... ({len(lines) - limit} more lines)"] if len(lines) > limit else [])
    return "\n".join(shown)
