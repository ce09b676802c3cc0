"""Data-parallel training across the processes of a torchrun job (DistributedDataParallel).

torchrun starts one process per device and tells each its place through RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT. A process started that way joins the job's process
group (NCCL on CUDA, gloo on the CPU) with a timeout on every collective, so a rank that dies
or hangs ends the job with an error instead of a hang. Each network of a model is wrapped in
DDP; BatchNorm statistics stay per rank unless converted to SyncBatchNorm. Rank 0 alone writes
files; every rank calls the functions here at the same points, in the same order.
"""

import datetime
import hashlib
import inspect
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from imagegen.common.errors import PeerError, UsageError, UserError

DEFAULT_TIMEOUT_S = 1800.0  # torch's own default for gloo; rank 0's FID runs must fit in it
T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """This process's place in the job; a world size of 1 is a plain single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Context()


def from_env(
    timeout_s: float = DEFAULT_TIMEOUT_S, environ: Mapping[str, str] | None = None
) -> Context:
    """The context torchrun set up for this process (one process when it did not start it)."""
    env = os.environ if environ is None else environ
    if timeout_s <= 0:
        raise UsageError(f"the collective timeout must be positive, got {timeout_s:g} s")
    if "WORLD_SIZE" not in env:
        return Context(timeout_s=timeout_s)
    try:
        world = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", "0"))
    except ValueError:
        raise UserError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them)"
        ) from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UserError(
            f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local}"
        )
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if world > 1 and not env.get(k)]
    if missing:
        raise UserError(
            f"WORLD_SIZE={world} but {' and '.join(missing)} not set; start the job with torchrun"
        )
    return Context(rank=rank, world_size=world, local_rank=local, timeout_s=timeout_s)


def local_device(device: torch.device, context: Context) -> torch.device:
    """The device of this rank: CUDA device LOCAL_RANK in a job, else `device` itself."""
    if device.type != "cuda" or not context.enabled:
        return device
    count = torch.cuda.device_count()
    if context.local_rank >= count:
        raise UserError(
            f"rank {context.rank} has LOCAL_RANK {context.local_rank} but this machine has "
            f"{count} CUDA device(s); start at most {count} process(es) per machine"
        )
    return torch.device("cuda", context.local_rank)


def _first_line(error: BaseException) -> str:
    """A backend error's message without its source location and advice."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)  # "[.../gloo/transport/tcp/pair.cc:545] "
    return text.split(". ")[0].rstrip(".")


@contextmanager
def process_group(context: Context, device: torch.device) -> Iterator[None]:
    """Be a member of the job's process group inside the block (nothing for one process)."""
    if not context.enabled:
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(
            backend, timeout=datetime.timedelta(seconds=context.timeout_s)
        )  # rank, world size and rendezvous address from torchrun's environment
    except (RuntimeError, ValueError) as e:
        raise UserError(f"rank {context.rank}: cannot join the job ({_first_line(e)})") from None
    finished = False
    try:
        yield
        finished = True
    finally:
        if finished:  # leave together: gloo aborts a process whose peers vanished mid-exit
            with suppress(RuntimeError):  # finished here; a peer lost now changes nothing
                dist.barrier()
        dist.destroy_process_group()


def is_communication_error(error: BaseException) -> bool:
    """Whether `error` comes from the process group (a peer died, hung or hung up)."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        s in text
        for s in ("gloo", "NCCL", "Connection reset", "Connection closed", "Timed out", "timed out")
    )


def lost_contact(error: BaseException, context: Context, step: int) -> UserError:
    """The one-line error for a collective that failed because another rank is gone."""
    return UserError(
        f"rank {context.rank}: lost contact with the other processes at step {step} "
        f"({_first_line(error)}); another rank died or hung "
        f"(collective timeout {context.timeout_s:g} s)"
    )


def on_main(context: Context, fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only; every rank gets its result, or fails with its error."""
    if not context.enabled:
        return fn()
    payload: list[Any] = [None]
    error: BaseException | None = None
    if context.is_main:
        try:
            payload[0] = ("ok", fn())
        except UserError as e:
            error, payload[0] = e, ("error", str(e), e.exit_code)
        except BaseException as e:
            error, payload[0] = e, ("error", f"rank 0 failed: {_first_line(e)}", 1)
    dist.broadcast_object_list(payload, src=0)
    if error is not None:
        raise error
    if payload[0][0] == "error":
        raise PeerError(payload[0][1], payload[0][2])
    return payload[0][1]


@contextmanager
def local_main_first(context: Context) -> Iterator[None]:
    """Each machine's local rank 0 runs the block first (filling caches), then the others."""
    if context.enabled and context.local_rank != 0:
        dist.barrier()
    yield
    if context.enabled and context.local_rank == 0:
        dist.barrier()


def sum_across(values: torch.Tensor, context: Context) -> torch.Tensor:
    """Element-wise sum of `values` over the ranks (in place; unchanged with one process)."""
    if context.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def gather(obj: T, context: Context) -> list[T]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not context.enabled:
        return [obj]
    out: list[Any] = [None] * context.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: T, context: Context) -> T:
    """Rank 0's `obj` on every rank."""
    if not context.enabled:
        return obj
    payload = [obj]
    dist.broadcast_object_list(payload, src=0)
    return payload[0]


def check_sync_batchnorm(device: torch.device) -> None:
    """Refuse SyncBatchNorm where torch cannot run it."""
    if device.type != "cuda":
        raise UsageError("--sync-bn needs CUDA devices (torch's SyncBatchNorm does not run on CPU)")


def convert_sync_batchnorm(networks: Mapping[str, nn.Module], device: torch.device) -> None:
    """Replace BatchNorm layers by SyncBatchNorm in place (batch statistics over all ranks)."""
    check_sync_batchnorm(device)
    for net in networks.values():
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        assert converted is net  # networks are containers, converted in place


def wrap(networks: Mapping[str, nn.Module], device: torch.device) -> dict[str, nn.Module]:
    """Each network in DDP; the wrappers share the networks' parameters (nothing is copied).

    Buffers are not broadcast at each forward: BatchNorm running statistics stay per rank and
    checkpoints hold rank 0's.
    """
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    no_buffer_sync: dict[str, Any] = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in params  # torch >= 2.14 deprecates broadcast_buffers
        else {"broadcast_buffers": False}
    )
    ids = [device.index] if device.type == "cuda" else None
    return {
        name: DistributedDataParallel(net, device_ids=ids, **no_buffer_sync)
        for name, net in networks.items()
    }


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's parameter names and bytes: equal on ranks that are in sync."""
    h = hashlib.sha256()
    for name, p in module.named_parameters():
        h.update(name.encode())
        h.update(p.detach().reshape(-1).cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def noise_seed(seed: int, rank: int) -> int:
    """Seed of a rank's noise stream: distinct per rank; rank 0's is the single-process one."""
    return seed + 1 + (rank << 32)
