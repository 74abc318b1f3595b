"""More than one process (torchrun): who this process is, where it runs, and the few collectives tasks need.

`torchrun --nproc_per_node N -m seqnlp.tasks.<kind> ...` starts N copies of a task's command with RANK,
LOCAL_RANK and WORLD_SIZE set. The task layer (`seqnlp.tasks.runner`) opens the process group here, before any
data is read, so that every process prepares the same tokenizers and data and can check that it did; the
trainer then shards the batches by rank and averages the gradients (DistributedDataParallel). Every helper is
a no-op in a single process, so recipes call them unconditionally.

The one contract that keeps N processes equal to one: process r trains on part r of every global batch
(`seqnlp.data.deal`), and a loss that averages over rows or tokens is rescaled by `mean_over_processes`, so that
DDP's average of the gradients is the gradient of the mean over the whole global batch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from seqnlp.device import resolve_device
from seqnlp.errors import SeqnlpError


def world_size() -> int:
    """How many processes train together (WORLD_SIZE, set by torchrun; 1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's place among them (RANK; 0 is the one that writes and prints)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's place on its machine (LOCAL_RANK): the GPU it takes."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes the run folder and prints the report."""
    return rank() == 0


def process_device(name: str, local: int, world: int) -> torch.device:
    """The device of the process with LOCAL_RANK `local` among `world` processes, for a --device `name`.

    One process: `resolve_device(name)`. Several: cpu stays cpu; 'cuda' (and 'auto' with a GPU) is the
    process's own GPU, cuda:LOCAL_RANK; 'cuda:N' is refused, since every process would take that one GPU.
    """
    if world <= 1:
        return resolve_device(name)
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name not in ("cuda", "auto"):
        if name.startswith("cuda:"):
            raise SeqnlpError(f"--device {name} under torchrun would put all {world} processes on one GPU; "
                              "use --device cuda: each process takes the GPU of its LOCAL_RANK")
        resolve_device(name)  # the one-line error for an unknown name
    if not torch.cuda.is_available():
        raise SeqnlpError(f"--device {name} was asked for but no CUDA GPU is available; use --device cpu")
    count = torch.cuda.device_count()
    if local >= count:
        raise SeqnlpError(f"the process with LOCAL_RANK {local} has no GPU: this machine has {count}; "
                          f"start at most {count} processes per machine (--nproc_per_node {count})")
    return torch.device(f"cuda:{local}")


def backend(device: torch.device) -> str:
    """The collective backend for processes on `device`: nccl between GPUs, gloo between CPUs.

    GPU processes get gloo for CPU tensors too: the trainer exchanges a few (RNG states, counters), which
    nccl alone refuses.
    """
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def active() -> bool:
    """Whether a process group of more than one process is open."""
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Open the process group for `device` under torchrun (and close it after), unless one is already open."""
    if world_size() <= 1 or torch.distributed.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)  # nccl's default device for this process
    torch.distributed.init_process_group(backend(device))
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


def _collective_device() -> torch.device:
    # A group opened elsewhere with nccl alone takes CUDA tensors only; ours (`backend`) takes CPU ones too.
    return torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" \
        else torch.device("cpu")


def barrier() -> None:
    """Wait until every process gets here."""
    if active():
        torch.distributed.barrier()


def check_same(data: bytes, what: str) -> None:
    """A one-line SeqnlpError unless every process holds the same `data` (compared by its sha256)."""
    if not active():
        return
    import hashlib

    digest = torch.frombuffer(bytearray(hashlib.sha256(data).digest()), dtype=torch.uint8)  # (32,)
    digest = digest.to(_collective_device(), torch.int64)  # gloo gathers int64, nccl only CUDA tensors
    rows = [torch.empty_like(digest) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(rows, digest)
    if any(not torch.equal(r, rows[0]) for r in rows):
        raise SeqnlpError(f"the processes prepared different {what}; every process must read the same data "
                          "(same files, same flags, same seqnlp version)")


def mean_over_processes(loss: torch.Tensor, count: int | torch.Tensor) -> torch.Tensor:
    """This process's mean `loss` over its `count` rows or tokens (an int or a 0-d tensor), rescaled so that DDP's average of the
    gradients over processes is the gradient of the mean over every process's rows or tokens together.

    Processes whose parts of a global batch differ in size (token counts always do) would otherwise weigh
    their rows or tokens unequally. A no-op outside training under DDP, so evaluation never waits for others.
    """
    if not (torch.is_grad_enabled() and active()):
        return loss
    mine = torch.as_tensor(count, dtype=torch.float64, device=loss.device).reshape(1)  # (1,)
    total = mine.clone()
    torch.distributed.all_reduce(total)
    return loss * (mine * torch.distributed.get_world_size() / total).to(loss.dtype).squeeze(0)


def sum_over_processes(value: float) -> float:
    """`value` summed over every process (itself in one process)."""
    if not active():
        return value
    total = torch.tensor([value], dtype=torch.float64, device=_collective_device())  # (1,)
    torch.distributed.all_reduce(total)
    return float(total.item())


def gather_rows(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Every process's `values` concatenated along `dim`, in rank order (the tensor itself in one process)."""
    if not active():
        return values
    parts = [torch.empty_like(values) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, values.contiguous())
    return torch.cat(parts, dim=dim)
