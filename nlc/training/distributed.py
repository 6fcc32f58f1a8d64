"""Data parallelism: ``torchrun --nproc_per_node=N -m nlc train ...``.

Every rank draws the same global batch of optimizer step s (the generator is seeded from
(seed, s), exactly as in a single process) and keeps rows ``[r·B/N, (r+1)·B/N)`` of it.
The model is wrapped in torch's ``DistributedDataParallel`` (gloo on CPU, nccl on CUDA),
which averages parameter gradients across ranks during ``backward``; with equal shards
that average is the gradient of the global batch's mean loss, so training equals the
single-process run up to floating-point summation order.

DDP works with the CMS teach signal: the model's in-forward ``torch.autograd.grad``
differentiates the loss w.r.t. block *outputs* (not parameters), so it runs no gradient
accumulator and fires none of DDP's hooks; only the final ``backward`` does.
``find_unused_parameters=True`` because a spec may leave a parameter out of a step's graph.
Fast state stays local to each rank (it is per sequence anyway); the optimizer levels
step on the same schedule on every rank (levels with ``{steps: k}`` accumulate already
averaged gradients, so the sum is the same everywhere). Only rank 0 writes metrics,
checkpoints, curves and the progress bar, and only it runs validation.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import NLCError


class DistributedError(NLCError):
    """A distributed run cannot split its batch or start its process group."""


@dataclass(frozen=True)
class World:
    """This process's place in the run (``size == 1``: a plain single process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this run initialised the process group (and must close it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        """On CUDA each rank takes its local GPU; CPU ranks share the CPU."""
        if self.size > 1 and requested.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return requested

    def local_batch(self, batch: int) -> int:
        if batch % self.size:
            fit = self.size * max(1, batch // self.size)
            raise DistributedError(f"train.batch={batch} does not split over {self.size} processes "
                                   f"(give a batch divisible by {self.size}, e.g. train.batch={fit})")
        return batch // self.size

    def shard(self, rows: Tensor) -> Tensor:
        """This rank's rows of a global batch."""
        per = self.local_batch(rows.shape[0])
        return rows[self.rank * per:(self.rank + 1) * per]

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module that runs the training forward: DDP around ``model`` when distributed."""
        if self.size == 1:
            return model
        device = next(model.parameters()).device
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, static_graph=True)

    def mean(self, value: Tensor) -> Tensor:
        """The mean of a tensor over ranks (itself when single-process)."""
        if self.size == 1:
            return value
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / self.size

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def join_world(device: torch.device) -> World:
    """The world from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``); initialises the process group if needed."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local)
        try:
            dist.init_process_group(backend, rank=rank, world_size=size)
        except (RuntimeError, ValueError) as err:
            raise DistributedError(f"cannot join the {backend} process group as rank {rank} of {size}: {err} "
                                   "(launch with torchrun, which sets MASTER_ADDR and MASTER_PORT)") from err
    return World(rank, size, local, owns)
