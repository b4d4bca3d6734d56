"""Data parallelism for one cell on one node, started by ``torchrun`` (DDP).

Outside torchrun (no ``WORLD_SIZE`` in the environment) everything here is a no-op, so the same
training code runs on a laptop, in a Ray worker and in each rank of a multi-GPU SLURM job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls, device: torch.device) -> DistContext:
        """Join the process group torchrun describes (NCCL on CUDA, Gloo on CPU)."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(local_rank)
            dist.init_process_group(backend=backend)
        return cls(rank=rank, world_size=world_size, local_rank=local_rank)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP around ``model`` (BatchNorm made synchronous first, see :func:`sync_batchnorm`)."""
        if self.world_size <= 1:
            return model
        on_cuda = next(model.parameters()).is_cuda
        if on_cuda:
            model = sync_batchnorm(model)
        device_ids = [self.local_rank] if on_cuda else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def shard(self, global_batch: list[int]) -> list[int]:
        """This rank's share of one global batch (equal sizes when it divides evenly)."""
        return global_batch[self.rank :: self.world_size] if self.world_size > 1 else global_batch

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """Every trainable BatchNorm (the ASPP blocks') as SyncBatchNorm, as the original does under
    DDP: with two clips per GPU, per-rank batch statistics would come from two samples.

    The network is changed in place (a new object only if its root is a BatchNorm); the frozen
    encoder BN is not a BatchNorm module and stays. Parameters and buffers are the same objects,
    so an optimiser built before stays valid and state-dict keys do not change. CUDA only:
    PyTorch's SyncBatchNorm has no CPU (Gloo) kernel, so CPU DDP keeps per-rank statistics.
    """
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def rank_device(name: str) -> torch.device:
    """The device a config names, for this rank: ``auto`` → this rank's CUDA device
    (``LOCAL_RANK``) when there is one, else CPU; anything else verbatim, refused when it names
    CUDA on a machine without one. (A measurement's device is
    :func:`d2bench.ops.environment.resolve_device`: None there means the current GPU.)"""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but no CUDA GPU is visible; use 'cpu'")
    return device
