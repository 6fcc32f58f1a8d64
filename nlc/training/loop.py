"""``nlc.train``: the outer training loop.

Optimizer step s (1-based) of a run seeded with ``seed``:

1. the global batch ``x, y`` (B, T) is ``nlc.data.sample_batch(train, B, T, g)`` with
   ``g`` seeded by ``step_seed(seed, s)`` (reproducible without replaying steps < s);
   under ``torchrun`` each rank keeps its B/N rows (:mod:`nlc.training.distributed`);
2. every sequence starts from ``model.init_state``; ``logits, _ = model(x, state, y)``:
   in-context and CMS levels update inside this forward (under autocast when
   ``train.dtype`` is bfloat16). A model with ``lifetime: stream`` levels reads
   ``nlc.data.stream_batch`` instead (row b continues its stream from step to step) and
   starts each step from ``model.next_sequence`` of the previous step's final state: those
   levels carry what they learned, detached (gradients stop at the step boundary); the
   carried state is saved with the optimizer state, so a resumed run goes on exactly. One
   with ``lifetime: document`` levels reads the split laid out on their grid
   (:meth:`nlc.data.Documents.stream`) and passes the document starts to the forward,
   which resets those levels' rows there (:mod:`nlc.data.documents`);
3. ``loss = CE(logits, y)`` (mean next-token cross-entropy, nats), ``loss.backward()``;
4. the optimizer levels due at s step (:class:`nlc.training.optim.OuterLevels`), the
   others keep accumulating;
5. a ``train`` record goes to ``metrics.jsonl``; every ``eval_every`` steps and at the
   end validation bpb on ``eval_batches`` fixed batches (:func:`nlc.evaluate.lm.evaluate_lm`)
   and ``curves.png``; every ``checkpoint_every`` steps and at the end a checkpoint.

Trackers (``loggers``, e.g. ``("tensorboard", "mlflow")``; :mod:`nlc.training.trackers`): every
record of ``metrics.jsonl`` is also sent to each, with the spec and run settings at the
start and each spec level's parameter norm at every validation.

Non-finite values (``check_finite``, on by default): the step's loss and the global norm of
the gradients are read together (one device sync, the one the logged loss costs anyway);
a NaN or inf stops the run *before* the optimizer step, with a
:class:`~nlc.errors.NonFiniteError` naming the level whose parameters, gradients, output or
state went non-finite first and at which token (the failing batch is re-run with hooks only
then: :meth:`nlc.runtime.model.NLCModel.diagnose_non_finite`) and the spec fields that bound
it. The parameters are checked before every validation and checkpoint, so no checkpoint of
non-finite weights replaces a good one; the last checkpoint is kept. A ``non_finite`` record
goes to ``metrics.jsonl``. ``check_finite=False`` restores the unchecked loop (same losses,
bit for bit, on a finite run).

Bits per byte: ``bpb = loss / (ln 2 · ρ)`` with ρ the bytes per token of the split (1
for the byte tokenizer).

Resume: ``resume=True`` continues from ``out/checkpoint`` (weights, optimizer state,
accumulating gradients, RNG states, step); as the batch of a step depends only on (seed,
step), a resumed run ends with the same weights as an uninterrupted one (bit for bit on
CPU). Without ``resume`` an existing checkpoint in ``out`` is never overwritten. A resume
may raise ``train.steps`` and change ``train.eval_every``
(:data:`nlc.training.config.RESUMABLE`): the lr schedules are then recomputed for the new
total (continued training, not a replay: the result equals an uninterrupted run of the new
length bit for bit only when every optimizer level's lr ignores the total, i.e. has
``schedule: constant``); any other difference is refused with a diff of the two specs.
"""
from __future__ import annotations

import difflib
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..data import sample_batch, stream_batch
from ..data.documents import split_for
from ..errors import NonFiniteError
from ..evaluate.lm import autocast, evaluate_lm
from ..spec.load import spec_to_yaml
from . import checkpoint as ckpt
from .config import RESUMABLE, TrainConfig, TrainResult, spec_identity, step_seed, with_budget
from .distributed import World, join_world
from .inputs import TrainData, TrainInputError, build_model, data_name, run_spec, train_data
from .metrics import MetricsLog
from .optim import OuterLevels
from .plots import plot_curves
from .progress import TrainProgress
from .trackers import Tracker, level_norms, open_trackers


def train(spec_or_model_or_path: Any, data: Any = None, out: str | Path = "runs/nlc", steps: int | None = None,
          overrides: tuple[str, ...] | list[str] = (), resume: bool = False, progress: bool = True,
          seed: int | None = None, *, checkpoint_every: int | None = None, keep_checkpoints: bool = False,
          device: str | torch.device | None = None,
          on_eval: Callable[[int, dict], None] | None = None, check_finite: bool = True,
          loggers: tuple[str, ...] | list[str] = (), carry: dict | None = None) -> TrainResult:
    """Train a spec (path, YAML text or :class:`~nlc.spec.Spec`) or a compiled model.

    ``data``: a corpus name (default: the spec's ``train.data``) or an object with
    ``train``/``val`` token tensors and ``vocab``. ``steps`` and ``seed`` override the
    spec's ``train.steps`` / ``train.seed``. Writes ``metrics.jsonl``, ``curves.png`` and
    ``checkpoint/`` under ``out``. ``on_eval(step, val_record)`` runs after each
    validation on rank 0; an exception it raises (e.g. ``optuna.TrialPruned``) stops the
    run and propagates. ``check_finite``: stop at the first non-finite loss, gradient or
    parameter with a :class:`~nlc.errors.NonFiniteError`. ``loggers``: experiment trackers
    (``tensorboard``, ``mlflow``, ``wandb``; :mod:`nlc.training.trackers`) that get every
    metrics record. ``carry``: the state a model with ``lifetime: stream`` levels starts its
    streams from (``TrainResult.carried`` of an earlier run of the same model and batch: a
    continual-learning stage goes on from the last, :mod:`nlc.continual`). See the module
    docstring.
    """
    trackers = open_trackers(loggers)  # a missing package fails before any work
    spec = run_spec(spec_or_model_or_path, tuple(overrides), steps=steps, seed=seed, data_name=data_name(data))
    config = TrainConfig.from_spec(spec, out, checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
                                   progress=progress, device=device)
    world = join_world(config.device)
    try:
        return _Run(spec_or_model_or_path, spec, config, train_data(data, spec), world, resume,
                    check_finite, trackers, carry).run(on_eval)
    finally:
        world.close()


class _Run:
    """One run's state; :meth:`run` executes it."""

    def __init__(self, given: Any, spec, config: TrainConfig, data: TrainData, world: World, resume: bool,
                 check_finite: bool = True, trackers: list[Tracker] | tuple[()] = (),
                 carry: dict | None = None) -> None:
        self.spec, self.config, self.data, self.world = spec, config, data, world
        self.check_finite = check_finite
        self.spec_sha256 = ckpt.spec_hash(spec)
        self.model = build_model(given, spec, world.device(config.device))
        self.model.train()
        self.outer = OuterLevels(self.model, config.steps)
        config.out.mkdir(parents=True, exist_ok=True)
        if world.is_main:
            ckpt.recover(config.out)  # finish what a killed save left
        self.log = MetricsLog(config.out / "metrics.jsonl", write=world.is_main, trackers=trackers)
        self.step, self.elapsed = 0, 0.0
        self.carried: dict | None = None  # the state the next step's streams continue from
        period = self.model.document_period  # documents laid out on its grid (nlc.data.documents)
        self.documents = None if period is None else split_for(data, "train", period)
        self.val = split_for(data, "val", period)
        if self.model.carried_layers and world.size > 1:
            raise TrainInputError("levels with lifetime: stream or document carry each batch row's state from step "
                                  "to step, and a checkpoint holds rank 0's rows only: train them in one process")
        if carry is not None:
            self.carried = self._given_carry(carry, resume)
        resumed = resume and self._resume()
        if not resumed:
            self._refuse_overwrite()
        self.log.start(self.step if resumed else None)
        self.net = world.wrap(self.model)  # after loading: every rank starts from the same weights

    def _given_carry(self, carry: dict, resume: bool) -> dict:
        """``carry`` checked as a checkpoint's carried state is (:func:`ckpt.carried_state`)."""
        if resume:
            raise TrainInputError("give carry or resume, not both: a resumed run continues the carried "
                                  "state of its checkpoint")
        if not self.model.carried_layers:
            raise TrainInputError("carry: the model has no lifetime: stream or document levels, so no state "
                                  "to carry")
        if carry.get("pos") != 0:
            raise TrainInputError("carry: give a state at the start of a sequence (TrainResult.carried, or "
                                  "model.next_sequence(state, batch)), whose 'pos' is 0")
        fresh = self.model.init_state(self.config.batch)  # a new run reads new text: documents begin again
        carry = {**carry, **{layer: fresh[layer] for layer in self.model.document_layers}}
        missing = [layer for layer in self.model.carried_layers if not isinstance(carry.get(layer), dict)]
        if missing:
            raise TrainInputError(f"carry has no state for the stream layers {missing}")
        flat, clocks = ckpt.stream_tensors(self.model, carry)
        return ckpt.carried_state(self.model, flat, {"stream_clocks": clocks}, Path("<carry>"), self.config.batch)

    # -- resume ----------------------------------------------------------------------
    def _refuse_overwrite(self) -> None:
        try:
            meta = ckpt.read_meta(self.config.out)
        except ckpt.NoCheckpointError:
            return
        raise ckpt.CheckpointError(f"{self.config.out} already holds a checkpoint (step {meta['step']}); "
                                   "pass --resume (resume=True) to continue it, or choose another --out")

    def _resume(self) -> bool:
        """Load ``out/checkpoint`` if there is one (False: nothing to resume, start at step 0)."""
        try:
            meta = ckpt.read_meta(self.config.out)
        except ckpt.NoCheckpointError:
            return False
        if meta["spec_sha256"] != self.spec_sha256:  # the same spec, or one that differs in its budget
            self._check_resumable(meta)
        if meta["step"] > self.config.steps:
            raise ckpt.CheckpointError(
                f"cannot resume {self.config.out / ckpt.LATEST}: it is at step {meta['step']}, past "
                f"train.steps={self.config.steps} (a run can be continued to more steps, not cut back: give "
                f"train.steps >= {meta['step']}, or train into another --out)")
        stored = meta["data"].get("sha256")  # the checks let a checkpoint of unhashed data pass
        if stored and self.data.sha256 and stored != self.data.sha256:
            raise ckpt.CheckpointError(
                f"cannot resume {self.config.out}: its data {meta['data'].get('name')!r} had sha256 "
                f"{stored}, the data given has {self.data.sha256} "
                "(use the same corpus or another --out)")
        ckpt.load_weights(self.model, self.config.out)
        flat = ckpt.load_optimizer_state(self.config.out, self.model)
        self.outer.load_state_tensors(flat)
        if self.model.carried_layers:
            self.carried = ckpt.carried_state(self.model, flat, meta, self.config.out, self.config.batch)
        ckpt.set_rng_state(meta["rng"])
        self.step, self.elapsed = meta["step"], meta["elapsed"]
        return True

    def _check_resumable(self, meta: ckpt.Meta) -> None:
        """Refuse a spec that differs from the checkpoint's in more than :data:`RESUMABLE`
        (the stored spec is parsed and validated first: it is data like any other)."""
        stored, given = ckpt.stored_spec(meta), self.spec
        if spec_identity(stored) == spec_identity(given):
            return
        budget = ", ".join(f"train.{name}" for name in RESUMABLE)
        raise ckpt.CheckpointError(
            f"cannot resume {self.config.out / ckpt.LATEST}: it was trained with spec sha256 "
            f"{meta['spec_sha256']}, but the spec given hashes to {self.spec_sha256} and differs in more than a "
            f"resume may change ({budget}). Resume with the same spec, overrides, --seed and --data, or train "
            "into another --out.\n"
            + _spec_diff(spec_to_yaml(with_budget(stored, given.train.steps, given.train.eval_every)),
                         spec_to_yaml(given)))

    # -- the loop --------------------------------------------------------------------
    def run(self, on_eval: Callable[[int, dict], None] | None = None) -> TrainResult:
        config = self.config
        self.log.start_trackers(spec_to_yaml(self.spec), self._tracked_config())
        try:
            self._run(on_eval)
        finally:
            self.log.close()
        vals = self.log.of_kind("val")
        return TrainResult(model=self.model, metrics=list(self.log.records),
                           val_bpb=vals[-1]["bpb"] if vals else math.nan,
                           checkpoint=config.out / ckpt.LATEST, out=config.out, carried=self.carried)

    def _tracked_config(self) -> dict:
        """The run's settings as the trackers' parameters (plain values)."""
        config = self.config
        return {"name": self.spec.name or "", "data": self.data.name, "steps": config.steps, "batch": config.batch,
                "seq_len": config.seq_len, "seed": config.seed, "eval_every": config.eval_every,
                "eval_batches": config.eval_batches, "dtype": config.dtype, "spec_sha256": self.spec_sha256,
                "parameters": sum(p.numel() for p in self.model.parameters()), "resumed_at": self.step}

    def _run(self, on_eval: Callable[[int, dict], None] | None) -> None:
        config = self.config
        with TrainProgress(config.steps, self.step, enabled=config.progress and self.world.is_main,
                           title=self.spec.name or "train") as bar:
            if self.step:
                bar.note(f"resumed {config.out / ckpt.LATEST} at step {self.step}")
            try:
                self._loop(bar, on_eval)
            except NonFiniteError as err:
                raise self._stopped(err) from None

    def _loop(self, bar: TrainProgress, on_eval: Callable[[int, dict], None] | None) -> None:
        config = self.config
        while self.step < config.steps:
            self.step += 1
            record = self._train_step()
            bar.update(record)
            validate = self.step % config.eval_every == 0 or self.step == config.steps
            save = self.step % config.checkpoint_every == 0 or self.step == config.steps
            if self.check_finite and (validate or save):
                self._check_parameters()
            if validate:
                val = self._validate()
                if val is not None:
                    bar.note(f"step {self.step}: val loss {val['loss']:.4f}  bpb {val['bpb']:.4f}")
                    if on_eval is not None:
                        on_eval(self.step, val)
            if save:
                self._checkpoint()

    def _train_step(self) -> dict:
        config, start = self.config, time.perf_counter()
        starts = None
        if self.documents is not None:  # each row continues its stream of documents
            *batch, starts = self.documents.stream(config.batch, config.seq_len, self.step, config.seed)
        elif self.model.carried_layers:  # each row continues its stream (nlc.data.stream_batch)
            batch = stream_batch(self.data.train, config.batch, config.seq_len, self.step, config.seed)
        else:
            generator = torch.Generator().manual_seed(step_seed(config.seed, self.step))
            batch = sample_batch(self.data.train, config.batch, config.seq_len, generator)
        device = self.model.embed.weight.device
        x, y = (self.world.shard(t).to(device) for t in batch)
        state = self.carried if self.carried is not None else self.model.init_state(x.shape[0])
        with autocast(x.device, config.autocast_dtype):
            logits, state = self.net(x, state, targets=y, starts=None if starts is None else starts.to(device))
        if self.model.carried_layers:
            self.carried = self.model.next_sequence(state, x.shape[0])
        if starts is None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        else:  # documents: a window may be all padding (nothing scored): its loss is 0, not 0 / 0
            scored = (y != -100).sum().clamp_min(1)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum") / scored
        loss.backward()
        loss = self.world.mean(loss.detach())
        loss_value = self._finite_loss(loss, batch) if self.check_finite else loss.item()
        self.outer.step(self.step)
        seconds = time.perf_counter() - start
        self.elapsed += seconds
        record = {"kind": "train", "step": self.step, "loss": loss_value,
                  "bpb": loss_value / (math.log(2) * self.data.train_bytes_per_token),
                  "lr": self.outer.lrs(self.step), "tokens_per_s": config.batch * config.seq_len / seconds,
                  "elapsed": self.elapsed}
        self.log.log(record)
        return record

    # -- non-finite values -------------------------------------------------------------
    def _finite_loss(self, loss: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        """The step's loss, read with the sum of the gradients' norms in one sync; a NaN or
        inf in either is located (the global ``batch`` re-run) and raised."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norms = [n.float() for n in torch._foreach_norm(grads)] if grads else [loss.new_zeros(())]
        loss_value, grad_norms = torch.stack([loss.float(), torch.stack(norms).sum()]).tolist()
        if not math.isfinite(loss_value):
            device = self.model.embed.weight.device
            with autocast(device, self.config.autocast_dtype):
                raise self.model.diagnose_non_finite(
                    f"non-finite loss ({loss_value}) at training step {self.step}", step=self.step,
                    tokens=batch[0].to(device), targets=batch[1].to(device))
        if not math.isfinite(grad_norms) and self.model.non_finite_levels(gradients=True):  # not a mere overflow
            raise self.model.diagnose_non_finite(
                f"non-finite gradients at training step {self.step} (its loss {loss_value:.4f} is finite)",
                step=self.step, gradients=True)
        return loss_value

    def _check_parameters(self) -> None:
        if self.model.non_finite_levels():
            raise self.model.diagnose_non_finite(
                f"non-finite parameters after the optimizer step of training step {self.step}", step=self.step)

    def _stopped(self, err: NonFiniteError) -> NonFiniteError:
        """``err`` with what happened to the run folder; logged as a ``non_finite`` record."""
        try:
            step = ckpt.read_meta(self.config.out)["step"]
            kept = f" {self.config.out / ckpt.LATEST} (step {step}) is kept as it was."
        except ckpt.CheckpointError:
            kept = " No checkpoint was written."
        err = err.reworded(suffix=kept)
        self.log.log({"kind": "non_finite", "step": self.step, "level": err.level, "position": err.position,
                      "message": str(err)})
        return err

    def _validate(self) -> dict | None:
        """Validation bpb (rank 0 only), logged, and the curves redrawn."""
        if not self.world.is_main:
            return None
        config, start = self.config, time.perf_counter()
        try:
            result = evaluate_lm(self.model, self.val, config.batch, config.seq_len, config.eval_batches,
                                 step_seed(config.seed, 0), bytes_per_token=self.data.val_bytes_per_token,
                                 autocast_dtype=config.autocast_dtype, check_finite=self.check_finite)
        except NonFiniteError as err:
            raise err.reworded(prefix=f"validation after training step {self.step}: ") from None
        self.elapsed += time.perf_counter() - start
        record = {"kind": "val", "step": self.step, **result, "elapsed": self.elapsed}
        self.log.log(record)
        if self.log.trackers:
            self.log.track({"kind": "norm", "step": self.step, **level_norms(self.model)})
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
        tensors = self.outer.state_tensors()
        if self.carried is not None:
            stream, meta["stream_clocks"] = ckpt.stream_tensors(self.model, self.carried)
            tensors.update(stream)
        ckpt.save_checkpoint(self.config.out, self.model, tensors, meta, keep=self.config.keep_checkpoints)


def _spec_diff(stored: str, given: str, limit: int = 20) -> str:
    """The first lines of a unified diff between the checkpoint's spec and the given one."""
    lines = list(difflib.unified_diff(stored.splitlines(), given.splitlines(), "checkpoint spec", "given spec",
                                      lineterm="", n=0))
    shown = lines[:limit] + ([f"... ({len(lines) - limit} more lines)"] if len(lines) > limit else [])
    return "\n".join(shown)
