"""Several processes, one job: rank, world size, device per rank, sharing results, barriers.

Launched by ``torchrun --nproc_per_node N -m repmatch ...`` (or any launcher that sets the same
environment: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``),
:func:`setup` joins the process group (NCCL when the ranks run on CUDA GPUs, Gloo on the CPU);
every other function here then works across those processes. In a single process (no
``WORLD_SIZE``, or ``WORLD_SIZE=1``) nothing is initialised and every function is a no-op:
rank 0 of 1, the main process, barriers that return at once.

A process group set up by the caller (e.g. with Accelerate) is used as it is.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from repmatch.errors import RepmatchError, first_line

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _active() -> bool:
    dist = sys.modules.get("torch.distributed")  # no group without it: torch stays unimported
    return dist is not None and dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank, 0 ... world_size - 1 (0 in a single process)."""
    if _active():
        import torch.distributed as dist

        return dist.get_rank()
    return 0


def world_size() -> int:
    """How many processes share the job (1 in a single process)."""
    if _active():
        import torch.distributed as dist

        return dist.get_world_size()
    return 1


def is_main() -> bool:
    """Whether this is rank 0, the process that checks and writes outputs."""
    return rank() == 0


def launched_processes() -> int:
    """How many processes the launcher started (``WORLD_SIZE``; 1 when not launched)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise RepmatchError(
            f"WORLD_SIZE is {os.environ['WORLD_SIZE']!r}, not a number; launch with torchrun"
        ) from None


def local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK``; 0 when not launched)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def rank_device(device: str | torch.device | None) -> str | torch.device | None:
    """The device of this rank: ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` under a launcher
    when CUDA is there (one GPU per process); anything else is kept as given."""
    import torch

    if launched_processes() > 1 and device in (None, "auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return device


def setup(device: torch.device) -> int:
    """Join the launcher's process group, if there is one; returns the world size.

    Idempotent; a no-op in a single process. ``device``: where this rank computes (CUDA: NCCL,
    else Gloo). The group is left at interpreter exit.
    """
    processes = launched_processes()
    if processes == 1 or _active():
        return world_size()
    import torch.distributed as dist

    if not dist.is_available():
        raise RepmatchError(
            "this torch build has no torch.distributed; run in one process (without torchrun)"
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend=backend)
    except (RuntimeError, ValueError) as err:
        raise RepmatchError(
            f"could not join the {processes} processes of this job ({first_line(err)}); launch "
            "with torchrun, which sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT"
        ) from None
    atexit.register(_leave)
    logger.info("rank %d of %d on %s (%s)", rank(), world_size(), device, backend)
    return world_size()


def start(device: str | torch.device | None) -> torch.device:
    """This rank's device (see :func:`rank_device`), after joining the process group if any."""
    from repmatch.models import resolve_device

    resolved = resolve_device(rank_device(device))
    setup(resolved)
    return resolved


def _leave() -> None:
    if _active():
        import torch.distributed as dist

        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here."""
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def all_gather(value: T) -> list[T]:
    """``value`` of every process, in rank order (any picklable object)."""
    if world_size() == 1:
        return [value]
    import torch.distributed as dist

    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def broadcast(value: T) -> T:
    """The main process's ``value``, on every process."""
    if world_size() == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over the processes, in place (returned for convenience)."""
    if world_size() > 1:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


@contextmanager
def checked_on_main(enter: Callable[[ExitStack], T]) -> Iterator[T | None]:
    """Run ``enter`` (checks, locks) on the main process only; every process shares its outcome.

    ``enter(stack)`` may push contexts onto ``stack`` (an output lock): they stay entered on the
    main process until the block ends. If it raises, the main process re-raises the error and
    every other process raises a :class:`RepmatchError` with the same message, so no process
    waits for the others forever. Yields ``enter``'s result on the main process, else None.
    """
    with ExitStack() as stack:
        result, failure, message = None, None, None
        if is_main():
            try:
                result = enter(stack)
            except Exception as err:  # shared with the other ranks, then re-raised here
                failure = err
                field = err.field if isinstance(err, RepmatchError) else None
                message = (first_line(err, width=1000), field)
        message = broadcast(message)
        if failure is not None:
            raise failure
        if message is not None:
            raise RepmatchError(message[0], field=message[1])
        yield result


def on_main(work: Callable[[], T]) -> T:
    """``work()`` (a job that only writes an output: select, overlap, report) on the main process;
    every process returns its result. Under a launcher the processes join a Gloo group and the
    others wait; an error on the main process is raised on every process (as
    :func:`checked_on_main`). In a single process: just ``work()``."""
    if launched_processes() > 1:
        import torch

        setup(torch.device("cpu"))  # Gloo; an existing group is used as it is
    with checked_on_main(lambda stack: work()) as result:
        return broadcast(result)  # type: ignore[return-value]  # None only off the main process


def shard(count: int) -> range:
    """The items of ``range(count)`` this process takes: every world_size-th, from its rank."""
    return range(rank(), count, world_size())
