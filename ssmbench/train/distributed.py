"""Data-parallel training with torch.distributed (DistributedDataParallel), launched by torchrun.

    torchrun --standalone --nproc_per_node N -m ssmbench train recipe.yaml      (or: ssmbench train --nproc N ...)

torchrun starts N processes and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `setup` joins
them into one process group (NCCL on CUDA, gloo on the CPU). The contract with the engine:

- Global batch. `train.batch_size` is the GLOBAL batch B. Every step all ranks take the same global batch b of
  the epoch's seeded permutation (a pure function of seed and epoch, like DistributedSampler.set_epoch) and
  rank r keeps the contiguous shard `shard_bounds(len(batch), r, W)`: sizes differ by at most one. Each rank
  scales its mean loss by w_r = W * n_r / B_b, so DDP's gradient average (1/W) sum_r w_r grad mean_r equals
  (1/B_b) sum_i grad loss_i, the single-process gradient of the same batch. batch_size must be >= W; a rank
  whose shard of a short final batch is empty gets one filler sample with weight 0.
- Metrics. Loss sums, correct counts and sample counts are summed over ranks (`all_reduce_sum`), so logged
  metrics are those of the whole batch / split, identical on every rank.
- BatchNorm. On CUDA, BatchNorm layers become SyncBatchNorm (statistics over the global batch, as in one
  process). torch's SyncBatchNorm does not run on the CPU, so there each rank normalizes with the statistics
  of its own shard and the running averages of rank 0 are broadcast to the others at every forward (DDP's
  `broadcast_buffers`); env.json["distributed"]["batchnorm"] records which policy ran.
- Writes. Only rank 0 writes the run directory; every rank reads the same checkpoint on resume. Ranks share
  the seed, hence one RNG stream (dropout masks repeat across ranks), which rank 0's checkpoint restores exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def env_rank() -> int:
    """This process's rank as set by torchrun (0 outside torchrun); valid before and after `setup`."""
    return int(os.environ.get("RANK", "0"))


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_active() -> bool:
    """True inside an initialized process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


def is_main_process() -> bool:
    """Rank 0: the process that writes files and prints."""
    return rank() == 0 if is_active() else env_rank() == 0


def backend_for(device_name: str) -> str:
    """NCCL when the recipe trains on CUDA, gloo on the CPU."""
    return "nccl" if device_name != "cpu" and torch.cuda.is_available() else "gloo"


def setup(device_name: str) -> bool:
    """Join the process group described by torchrun's environment; return whether this call created it.

    Nothing to do for a single process (WORLD_SIZE unset or 1) or when a group already exists.
    """
    if env_world_size() <= 1 or dist.is_initialized():
        return False
    backend = backend_for(device_name)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """Under DDP on CUDA each process uses the GPU of its LOCAL_RANK; otherwise `device` unchanged."""
    if is_active() and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def barrier() -> None:
    if is_active():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` as held by rank `src`, on every rank (picklable objects, e.g. the run directory path)."""
    if not is_active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Elementwise sum over ranks of a few numbers, in float64 (identity in a single process)."""
    if not is_active():
        return [float(v) for v in values]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous share of n items: the first n % world ranks get one item more."""
    q, extra = divmod(n, world)
    start = rank * q + min(rank, extra)
    return start, start + q + (1 if rank < extra else 0)


def shard(indices: list[int], rank: int, world: int, filler: bool) -> list[int]:
    """Rank's share of one global batch. An empty share becomes [indices[0]] when `filler` (training, where
    every rank must take part in each step; the engine gives it loss weight 0), else stays empty."""
    start, stop = shard_bounds(len(indices), rank, world)
    if start == stop and filler:
        return indices[:1]
    return indices[start:stop]


def batchnorm_policy(model: torch.nn.Module, device: torch.device) -> str:
    """How BatchNorm statistics are computed: "none" (no BatchNorm), "single-process", or under DDP "synced"
    (CUDA) or "per-rank" (CPU)."""
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return "none"
    if not is_active():
        return "single-process"
    return "synced" if device.type == "cuda" else "per-rank"


def prepare(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Convert BatchNorm to SyncBatchNorm when `batchnorm_policy` says "synced" (call before building the
    optimizer; the converted layers keep the same parameter objects and state-dict keys)."""
    if batchnorm_policy(model, device) == "synced":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The module to call in training steps: DDP around `model` under DDP, else `model` itself.

    The engine keeps `model` (unwrapped) for evaluation and state dicts, so checkpoint keys carry no
    `module.` prefix and a DDP checkpoint loads in one process and vice versa.
    """
    if not is_active():
        return model
    # S4D's gradients of view_as_real parameters come with permuted strides; DDP copies them into its buckets
    # correctly and only warns that the copy costs time.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    ids = [device.index] if device.type == "cuda" else None
    # Buffers are broadcast from rank 0 at every forward only where ranks' buffers drift apart: per-rank BatchNorm
    # statistics (CPU). SyncBatchNorm computes the same statistics on every rank, and other buffers (S4D's
    # linear_real) change only before wrapping, when DDP broadcasts the module state once.
    return DistributedDataParallel(model, device_ids=ids,
                                   broadcast_buffers=batchnorm_policy(model, device) == "per-rank")


def facts(model: torch.nn.Module, device: torch.device, batch_size: int) -> dict[str, Any]:
    """What env.json records about data parallelism."""
    w = world_size()
    return {"world_size": w, "backend": dist.get_backend() if is_active() else None,
            "global_batch": batch_size, "per_rank_batch": [b - a for a, b in (shard_bounds(batch_size, r, w) for r in range(w))],
            "batchnorm": batchnorm_policy(model, device)}


def torchrun_command(nproc: int, args: Sequence[str]) -> list[str]:
    """The torchrun command that runs `ssmbench ARGS` in `nproc` processes on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "ssmbench", *args]


def launch(nproc: int, args: Sequence[str]) -> int:
    """Run `ssmbench ARGS` under torchrun with `nproc` processes; return torchrun's exit status."""
    return subprocess.run(torchrun_command(nproc, args)).returncode
