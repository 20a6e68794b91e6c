"""DistributedDataParallel plumbing for runs launched with ``torchrun`` (or ``srun``).

``torchrun --nproc-per-node N train.py ...`` starts N processes with ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` set; :func:`setup` joins them into a process group (NCCL on CUDA, gloo on CPU). Each
process trains on its shard of every global batch (``data.batch_size`` samples per process), DDP
averages the gradients, and only rank 0 logs, checkpoints and writes ``metrics.json``. Without
those variables (a plain ``python train.py``) everything here is a no-op. Under Slurm,
``srun --ntasks-per-node N python train.py trainer=ddp ...`` (or submitit) starts one task per process
and :func:`slurm_variables` turns Slurm's variables into torchrun's.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from zoo.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


#: the first port a Slurm job's rendezvous may take (plus the job id modulo PORT_SPAN)
PORT_BASE, PORT_SPAN = 20000, 20000


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: ``gpu[03-05,09],cpu1`` -> ``gpu03``, ``a,b`` -> ``a``."""
    entry, depth = "", 0
    for ch in nodelist.strip():
        if ch == "," and depth == 0:
            break
        depth += (ch == "[") - (ch == "]")
        entry += ch
    if "[" not in entry:
        return entry
    prefix, rest = entry.split("[", 1)
    return prefix + rest.split("]", 1)[0].split(",", 1)[0].split("-", 1)[0]


def slurm_variables(environ: dict[str, str] | os._Environ[str] = os.environ) -> dict[str, str]:
    """torchrun's variables for a process that ``srun`` started as one task of a step of several
    (``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_STEP_NUM_TASKS``; the rendezvous on the step's first
    node at a port derived from the job id, unless ``MASTER_ADDR``/``MASTER_PORT`` are set); empty
    when torchrun's own are set or this is not such a task (a batch script's single process)."""
    e = environ
    tasks = int(e.get("SLURM_STEP_NUM_TASKS", "1") or 1)
    if "RANK" in e or "SLURM_PROCID" not in e or tasks < 2:
        return {}
    job, step = e.get("SLURM_JOB_ID", "0"), e.get("SLURM_STEP_ID", "0")
    nodes = e.get("SLURM_STEP_NODELIST") or e.get("SLURM_JOB_NODELIST") or "127.0.0.1"
    port = PORT_BASE + int(job) % PORT_SPAN if job.isdigit() else PORT_BASE
    return {"RANK": e["SLURM_PROCID"], "LOCAL_RANK": e.get("SLURM_LOCALID", "0"), "WORLD_SIZE": str(tasks),
            "MASTER_ADDR": e.get("MASTER_ADDR") or first_host(nodes), "MASTER_PORT": e.get("MASTER_PORT") or str(port),
            "TORCHELASTIC_RUN_ID": f"slurm{job}.{step}"}


def env() -> DistEnv:
    """The process's place in the job, from the variables torchrun sets, or Slurm's for a task of an
    ``srun`` step (copied into torchrun's, so the process group forms the same way); a single process
    without either."""
    os.environ.update(slurm_variables())
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size())
    world = int(os.environ.get("WORLD_SIZE", 1))
    return DistEnv(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), world)


def setup(device: torch.device) -> DistEnv:
    """Join the process group torchrun describes; returns the (possibly single-process) environment."""
    e = env()
    if not e.enabled or dist.is_initialized():
        return e
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed; run a single process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(e.local_rank)
    dist.init_process_group(backend=backend)
    if not e.is_main:  # one voice: the other ranks only report problems
        logging.getLogger().setLevel(logging.WARNING)
    return env()


def local_device(device: torch.device) -> torch.device:
    """``cuda`` becomes this process's GPU (``cuda:LOCAL_RANK``) in a distributed CUDA run."""
    e = env()
    if device.type == "cuda" and e.enabled and device.index is None:
        return torch.device("cuda", e.local_rank)
    return device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The mean over ranks of each (scalar) value; the identity in a single process."""
    if not env().enabled or not values:
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys])
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    stacked /= dist.get_world_size()
    return dict(zip(keys, stacked.unbind()))


def all_reduce_mean_(tensors: list[torch.Tensor]) -> None:
    """Replace each tensor by its mean over ranks, in place; nothing in a single process."""
    if not env().enabled:
        return
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one (e.g. a stop request from a signal)."""
    if not env().enabled:
        return flag
    t = torch.tensor(int(flag), device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t)


def barrier() -> None:
    if env().enabled:
        dist.barrier()


def wrap_model(model: torch.nn.Module, device: torch.device, sync_batchnorm: bool, find_unused_parameters: bool) -> Any:
    """``model`` in DistributedDataParallel (with SyncBatchNorm when asked); unchanged in a single process."""
    if not env().enabled:
        return model
    if sync_batchnorm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)


def run_name(default: str) -> str:
    """The run-directory leaf: ``default`` (a timestamp) in a single process; in a torchrun job a name
    every rank computes alike from the job's rendezvous, so all ranks share one run directory."""
    e = env()
    if not e.enabled:
        return default
    parts = [os.environ.get("TORCHELASTIC_RUN_ID", "none"), os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")]
    return "ddp-" + "-".join(p.replace("/", "_").replace(":", "_") for p in parts if p)
