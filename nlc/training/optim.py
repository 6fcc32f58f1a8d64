"""The outer levels: one torch optimizer per optimizer level of the spec.

Each parameter belongs to the spec level that owns it (``model.parameters_by_level()``),
and each level to its optimizer level (``model.schedule.groups``); the embedding, head and
final norm (level ``""``) belong to the outermost optimizer level (the one on the slowest
step clock). An optimizer level with ``period: {steps: k}`` steps at optimizer steps k, 2k,
... (``model.schedule.due``); between them its parameters' gradients accumulate, and at its
step they are divided by k (the mean over the k batches) before clipping.

Rules (:mod:`nlc.spec.optimizers`): ``adamw`` (decoupled weight decay), ``adam``
(``weight_decay`` as an L2 term added to the gradient) and ``sgd`` (``momentum``,
``nesterov``; L2 as for adam) run as torch's optimizers; ``muon``, ``m3`` and ``memories``
as their gradient memories (:class:`nlc.optim.GradientMemories`, from the rule written out
by :func:`nlc.spec.presets.expand`): the *matrices* (2-D parameters but the token
embedding and an untied head) follow the rule's ``matrices``, the rest its ``others``.
Weight decay applies to parameters with two or more dimensions only (projections, MLP and
memory weights, meta-learned matrix initial states, an untied head), never to norms,
biases, scalar/vector knobs or the token embedding. ``grad_clip`` caps the global L2 norm
of the level's gradient. The learning rate follows :mod:`nlc.training.lr` on the level's own
update count.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..ir.nodes import OptimizerIR
from ..optim import GradientMemories
from .lr import lr_factor


@dataclass
class LevelOptimizer:
    """One optimizer level: its IR, its named parameters and the torch optimizer."""

    name: str
    ir: OptimizerIR
    params: list[tuple[str, nn.Parameter]]
    optimizer: torch.optim.Optimizer | None  # None when the level owns no parameter

    def updates(self, step: int) -> int:
        """Updates this level has made once optimizer step ``step`` is done."""
        return step // self.ir.steps

    def lr(self, update: int, total_steps: int) -> float:
        """The lr of update number ``update`` (1-based) in a run of ``total_steps``."""
        total = total_steps // self.ir.steps
        return self.ir.lr * lr_factor(self.ir.schedule, self.ir.warmup, update, total)


def level_optimizer(ir: OptimizerIR, params: list[Tensor], decays: set[int], matrices: set[int]
                    ) -> torch.optim.Optimizer:
    """The optimizer of one level over ``params``: weight decay on the ids in ``decays``,
    the rule's ``matrices`` on the ids in ``matrices`` (gradient-memory rules only)."""
    if ir.rule in ("adamw", "adam", "sgd"):
        groups = [{"params": ps, "weight_decay": wd} for ps, wd in (
            ([p for p in params if id(p) in decays], ir.weight_decay),
            ([p for p in params if id(p) not in decays], 0.0)) if ps]
        if ir.rule == "sgd":
            momentum = ir.matrices.momenta[0] if ir.matrices.momenta else None
            return torch.optim.SGD(groups, lr=ir.lr, momentum=momentum.retention if momentum else 0.0,
                                   nesterov=bool(momentum and momentum.nesterov))
        optimizer = torch.optim.AdamW if ir.rule == "adamw" else torch.optim.Adam
        return optimizer(groups, lr=ir.lr, betas=ir.betas, eps=ir.eps)
    groups = []
    for rule, is_matrix in ((ir.matrices, True), (ir.others, False)):
        for decayed in (True, False):
            ps = [p for p in params if (id(p) in matrices) == is_matrix and (id(p) in decays) == decayed]
            if ps:
                groups.append({"params": ps, "rule": rule, "weight_decay": ir.weight_decay if decayed else 0.0})
    return GradientMemories(groups, lr=ir.lr, eps=ir.eps)


class OuterLevels:
    """The optimizer levels of a compiled model, stepped by its update schedule."""

    def __init__(self, model: nn.Module, total_steps: int) -> None:
        self.schedule, self.total_steps = model.schedule, total_steps
        irs = {n: lv for n, lv in model.ir.levels.items() if isinstance(lv, OptimizerIR)}
        self.outermost = max(irs, key=lambda n: irs[n].steps)
        names = {id(p): n for n, p in model.named_parameters()}
        owned: dict[str, list[tuple[str, nn.Parameter]]] = {n: [] for n in irs}
        for level, params in model.parameters_by_level().items():
            target = self.schedule.groups.get(level, self.outermost) if level else self.outermost
            owned[target].extend((names[id(p)], p) for p in params)
        embedding = id(model.embed.weight)
        head = {id(model.head.weight)} if getattr(model, "head", None) is not None else set()
        self.levels: dict[str, LevelOptimizer] = {}
        for name, ir in irs.items():
            params = [p for _, p in owned[name]]
            decays = {id(p) for p in params if p.dim() >= 2 and id(p) != embedding}
            matrices = {id(p) for p in params if p.dim() == 2 and id(p) != embedding and id(p) not in head}
            optimizer = level_optimizer(ir, params, decays, matrices) if params else None
            self.levels[name] = LevelOptimizer(name, ir, owned[name], optimizer)

    def lrs(self, step: int) -> dict[str, float]:
        """Each level's lr for the update it makes at or after optimizer step ``step``."""
        return {n: lv.lr(-(-step // lv.ir.steps), self.total_steps) for n, lv in self.levels.items()}

    def step(self, step: int) -> frozenset[str]:
        """Step the levels due at optimizer step ``step`` (1-based) after its backward pass;
        the others keep accumulating gradients. Returns the levels that stepped."""
        due = self.schedule.due(step)
        for name in sorted(due):
            level = self.levels[name]
            if level.optimizer is None:
                continue
            grads = [p.grad for _, p in level.params if p.grad is not None]
            if level.ir.steps > 1 and grads:
                torch._foreach_div_(grads, float(level.ir.steps))
            if level.ir.grad_clip is not None and grads:
                nn.utils.clip_grad_norm_([p for _, p in level.params], level.ir.grad_clip)
            lr = level.lr(level.updates(step), self.total_steps)
            for group in level.optimizer.param_groups:
                group["lr"] = lr
            if isinstance(level.optimizer, GradientMemories):
                level.optimizer.set_update(level.updates(step))
            level.optimizer.step()
            level.optimizer.zero_grad(set_to_none=True)
        return due

    # -- checkpoint state: flat tensors ---------------------------------------------------
    def state_tensors(self) -> dict[str, Tensor]:
        """Optimizer state and gradients still accumulating, as ``{"opt/<param>/<key>": t,
        "grad/<param>": t}`` (names are the model's parameter names)."""
        flat: dict[str, Tensor] = {}
        for level in self.levels.values():
            for name, p in level.params:
                if p.grad is not None:
                    flat[f"grad/{name}"] = p.grad.detach().contiguous()
                if level.optimizer is None:
                    continue
                for key, value in level.optimizer.state.get(p, {}).items():
                    if isinstance(value, Tensor):
                        flat[f"opt/{name}/{key}"] = value.detach().contiguous()
        return flat

    def load_state_tensors(self, flat: dict[str, Tensor]) -> None:
        """Restore what :meth:`state_tensors` saved (replacing any current state)."""
        for level in self.levels.values():
            for name, p in level.params:
                grad = flat.get(f"grad/{name}")
                p.grad = None if grad is None else grad.to(p.device, p.dtype).clone()
                if level.optimizer is None:
                    continue
                prefix = f"opt/{name}/"
                state = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
                level.optimizer.state[p] = {k: v.clone() if v.dim() == 0 else v.to(p.device).clone()
                                            for k, v in state.items()}
