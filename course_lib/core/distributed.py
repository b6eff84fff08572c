"""Training one recipe on several processes: ``torchrun`` starts them, ``DistributedDataParallel`` keeps them in step.

    torchrun --standalone --nproc_per_node 4 -m course_lib.zoo train ddpm_mnist --profile gpu

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in each process's environment. With ``WORLD_SIZE > 1``,
:func:`course_lib.core.train.fit` joins the process group (NCCL on CUDA, one GPU per process; gloo on the CPU), wraps
the model in ``DistributedDataParallel`` and gives each process its own slice of every batch: all processes draw the
same global batch of the recipe's size (same seed), process ``r`` of ``n`` trains on rows ``r*b/n .. (r+1)*b/n``, and
DDP averages the gradients, so the global batch, and the step, are what the recipe and its manifest say. Only
process 0 shows a progress bar and writes the checkpoint and the manifest. Without torchrun nothing here
does anything. Chapter 00, "Beyond one machine", says when this is worth it.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.distributed as dist


class World(NamedTuple):
    rank: int  # this process, 0 .. size - 1
    size: int  # how many processes train together
    local_rank: int  # this process on its machine (its GPU)


def world() -> World:
    """Who this process is, from torchrun's environment (one process of one when not under torchrun)."""
    def number(name: str, default: int) -> int:
        value = os.environ.get(name, str(default))
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{name}={value!r} is not a whole number; torchrun sets it, do not set it by hand") from None
    return World(number("RANK", 0), number("WORLD_SIZE", 1), number("LOCAL_RANK", 0))


def is_distributed() -> bool:
    """Whether several processes train together (``WORLD_SIZE > 1``, as torchrun sets it)."""
    return world().size > 1


def is_main() -> bool:
    """Whether this is process 0, the one that prints and saves."""
    return world().rank == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group (once) and return the device this process trains on: ``cuda:LOCAL_RANK`` on CUDA."""
    if not is_distributed():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", world().local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


_trained_with_others = False  # set by wrap(): this process trained a model with DistributedDataParallel


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` inside ``DistributedDataParallel`` (which copies process 0's weights to every process)."""
    global _trained_with_others
    ids = [device.index] if device.type == "cuda" else None
    _trained_with_others = True
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def trained_together() -> bool:
    """Whether this process trained a model with the others (a recipe with a training loop of its own does not)."""
    return _trained_with_others


def shard(batch, rank: int | None = None, size: int | None = None):
    """This process's rows of a global batch (a tensor, or a tuple/list/dict of tensors with the same first size)."""
    me = world()
    rank = me.rank if rank is None else rank
    size = me.size if size is None else size
    if size == 1:
        return batch
    if isinstance(batch, torch.Tensor):
        n = batch.shape[0]
        if n % size:
            raise ValueError(f"a global batch of {n} does not split evenly over {size} processes: run a number of "
                             f"processes that divides {n} (torchrun --nproc_per_node), or change the recipe's batch size")
        return batch[rank * n // size:(rank + 1) * n // size]
    if isinstance(batch, dict):
        return {key: shard(value, rank, size) for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard(value, rank, size) for value in batch)
    raise TypeError(f"cannot split a batch of type {type(batch).__name__} over processes: yield tensors, "
                    "or tuples, lists or dicts of tensors")


def mean_over_processes(value: float) -> float:
    """The mean of ``value`` over all processes (a loss to log), or ``value`` itself without torchrun."""
    if not (is_distributed() and dist.is_initialized()):
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.item() / world().size


def barrier() -> None:
    """Wait until every process gets here (nothing without torchrun)."""
    if is_distributed() and dist.is_initialized():
        dist.barrier()


def teardown() -> None:
    """Leave the process group (at the end of a run)."""
    if dist.is_initialized():
        dist.destroy_process_group()
