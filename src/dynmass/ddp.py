"""The distributed (DDP) path of training: the ``torch.distributed`` process group.

When ``dynmass train`` is started by ``torchrun`` (``WORLD_SIZE > 1``), :func:`init_distributed`
initialises the process group (NCCL on CUDA, gloo otherwise); the CNN fits then train every
rank on its shard of each batch through :class:`torch.nn.parallel.DistributedDataParallel`
(:mod:`dynmass.models.epochs`), and :mod:`dynmass.train` lets only rank 0 write files, with
:func:`barrier` between the steps that depend on them. Outside ``torchrun`` everything here
is a no-op and torch is not imported until a function is called.

Examples
--------
>>> from dynmass.ddp import distributed
>>> with distributed("cpu") as (rank, world_size):  # not under torchrun: a single process
...     print(rank, world_size)
0 1
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger(__name__)

__all__ = ["barrier", "distributed", "init_distributed"]


def init_distributed(device: str = "auto") -> bool:
    """Initialise ``torch.distributed`` when launched by ``torchrun`` with ``WORLD_SIZE > 1``.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "mps"}
        The training device: NCCL for CUDA, gloo otherwise.

    Returns
    -------
    bool
        True if this call initialised a process group (the caller destroys it).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    from dynmass.models.torch_runtime import resolve_device

    dev = resolve_device(device, strict=True)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend=backend)
    log.info("initialised %s process group: rank %d of %d", backend, dist.get_rank(),
             dist.get_world_size())
    return True


@contextlib.contextmanager
def distributed(device: str) -> Iterator[tuple[int, int]]:
    """Process group for the block (if under torchrun); yields ``(rank, world_size)``.

    A group initialised here is destroyed on leaving the block; one that already existed is
    left alone.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "mps"}
        The training device (chooses the backend, see :func:`init_distributed`).
    """
    import torch.distributed as dist

    mine = init_distributed(device)
    try:
        if dist.is_available() and dist.is_initialized():
            yield dist.get_rank(), dist.get_world_size()
        else:
            yield 0, 1
    finally:
        if mine:
            dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank of the process group (no-op without one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
