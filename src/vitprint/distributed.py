"""Several processes: which one this is, and the few collectives that scoring needs.

A command started by ``torchrun`` or ``accelerate launch`` runs once per process. Training
shares its work through Accelerate (data-parallel, checkpoints written by the main process).
Scoring shares the generated set: inside ``sharded()`` each process encodes and searches its
own chunks of it and the answers are gathered, so every process ends with the whole result,
equal to what one process computes. Outside ``sharded()`` (and in one process) nothing here
changes anything. The main process alone writes a command's outputs.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from typing import Any, Callable, Iterator

import numpy as np
import torch

_SHARDED = False


def world_size() -> int:
    """How many processes run this command (1 unless started by torchrun / accelerate launch)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True in the process that writes outputs (the only one, without a launcher)."""
    return rank() == 0


def init(device: torch.device | str = "cpu") -> None:
    """Join the process group (gloo on a CPU, nccl on GPUs) through Accelerate, once; nothing in one process."""
    if world_size() > 1 and not torch.distributed.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=torch.device(device).type == "cpu")
        # Leave the group before the interpreter exits: a gloo group still open then can abort the process
        # ("terminate called without an active exception") after its work is done.
        atexit.register(_leave)


def _leave() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def active() -> bool:
    """Inside ``sharded()`` with more than one process in the group."""
    return _SHARDED and world_size() > 1 and torch.distributed.is_initialized()


@contextlib.contextmanager
def sharded(device: torch.device | str = "cpu") -> Iterator[None]:
    """Within the block, nearest-neighbour searches and generated-set encodings split their work over
    the processes (every process must enter the block and run the same searches in the same order)."""
    global _SHARDED
    init(device)
    before, _SHARDED = _SHARDED, True
    try:
        yield
    finally:
        _SHARDED = before


def my_chunks(n_chunks: int) -> range:
    """The chunk numbers this process handles: every ``world``-th one, from its rank (all of them alone)."""
    if not active():
        return range(n_chunks)
    return range(torch.distributed.get_rank(), n_chunks, torch.distributed.get_world_size())


def gather(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` alone)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Every process waits for the others here (nothing alone)."""
    if active():
        torch.distributed.barrier()


def leads() -> bool:
    """True where work done once for all processes happens: the main process inside ``sharded()``, every
    process outside it."""
    return not active() or torch.distributed.get_rank() == 0


def on_main(fn: Callable[[], Any]) -> Any:
    """``fn()`` run by the main process alone inside ``sharded()``, its result sent to every process
    (``fn()`` itself outside)."""
    if not active():
        return fn()
    box = [fn() if torch.distributed.get_rank() == 0 else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def map_chunks(fn: Callable[[int, int], np.ndarray], n: int, chunk: int, **progress) -> list[np.ndarray]:
    """``[fn(start, stop) for each chunk of range(n)]``, the chunks shared over the processes and gathered
    back in order; each chunk is computed exactly as one process computes it. ``progress`` goes to the
    progress bar (``enabled``, ``desc``, ``unit``)."""
    from vitprint.progress import bar

    starts = list(range(0, n, chunk))
    mine = {c: fn(starts[c], min(starts[c] + chunk, n)) for c in bar(my_chunks(len(starts)), **progress)}
    merged: dict[int, np.ndarray] = {}
    for part in gather(mine):
        merged.update(part)
    return [merged[c] for c in range(len(starts))]
