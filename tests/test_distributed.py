"""DistributedDataParallel on CPU (gloo, 2 processes under torchrun) against one process with the
same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, make_cfg
from zoo.engine.checkpoint import load_checkpoint
from zoo.pipeline import train

# no augmentation (each rank augments its own shard with its own stream); full global batches only
COMMON = ["trainer.max_epochs=2", "logger=none", "augmentation=none",
          "trainer.device=cpu", "trainer.limit_train_batches=19", "trainer.deterministic=true"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
@pytest.mark.parametrize("extra", [[], pytest.param(["transfer=linear_probe", "transfer.gradual_unfreeze=1"], marks=pytest.mark.slow),
                                   pytest.param(["trainer.accumulate_grad_batches=2", "optimizer=sgd", "optimizer.lr=0.05"],
                                                marks=pytest.mark.slow)],
                         ids=["plain", "gradual_unfreeze", "accumulate"])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path: Path, extra: list[str]) -> None:
    """Also with gradual unfreezing (stages that start training mid-run are all-reduced too) and with
    gradient accumulation (all-reduced once per update, under ``no_sync`` in between; plain SGD there,
    since Adam's normalised steps turn the different summation order of near-zero gradients into
    visible differences)."""
    ddp_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(REPO / "train.py"),
         *COMMON, *extra, "data.batch_size=32", f"hydra.run.dir={ddp_dir}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed: 2 processes, gloo backend" in proc.stdout + proc.stderr
    _assert_matches_one_process(ddp_dir, tmp_path, extra)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow  # the default suite has the two Slurm tasks, which meet at one address the same way
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_nodes_match_one_process(tmp_path: Path) -> None:
    """Multi-node: two torchrun launches (``--nnodes 2 --node-rank 0|1``) meeting at one address, as on two
    machines sharing a file system; each process is LOCAL_RANK 0, so only the global rank may decide who writes."""
    ddp_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = _free_port()
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank),
             "--master-addr", "127.0.0.1", "--master-port", str(port), str(REPO / "train.py"), *COMMON,
             "data.batch_size=32", f"hydra.run.dir={ddp_dir}"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in range(2)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert "distributed: 2 processes, gloo backend" in outputs[0]
    assert "run directory" in outputs[0] and "run directory" not in outputs[1]  # only global rank 0 logs
    _assert_matches_one_process(ddp_dir, tmp_path, [])


def test_slurm_variables_become_torchruns() -> None:
    from zoo.engine.distributed import PORT_BASE, first_host, slurm_variables

    task = {"SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_STEP_NUM_TASKS": "4", "SLURM_JOB_ID": "12345",
            "SLURM_STEP_ID": "0", "SLURM_STEP_NODELIST": "gpu[07-08]"}
    assert slurm_variables(task) == {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "gpu07",
                                     "MASTER_PORT": str(PORT_BASE + 12345), "TORCHELASTIC_RUN_ID": "slurm12345.0"}
    assert slurm_variables({**task, "MASTER_PORT": "29400"})["MASTER_PORT"] == "29400"
    assert slurm_variables({**task, "RANK": "0"}) == {}  # torchrun's own variables win
    assert slurm_variables({**task, "SLURM_STEP_NUM_TASKS": "1"}) == {}  # one task: no process group
    assert slurm_variables({k: v for k, v in task.items() if k != "SLURM_STEP_NUM_TASKS"}) == {}  # a batch script
    assert [first_host(n) for n in ("gpu[03-05,09],cpu1", "a,b", "node1", "n[9-10]")] == ["gpu03", "a", "node1", "n9"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_slurm_tasks_match_one_process(tmp_path: Path) -> None:
    """Two processes started as srun starts the tasks of a step (Slurm's variables only, no torchrun)."""
    ddp_dir = tmp_path / "ddp"
    slurm = {"SLURM_STEP_NUM_TASKS": "2", "SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0",
             "SLURM_STEP_NODELIST": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    tasks = [
        subprocess.Popen([sys.executable, str(REPO / "train.py"), *COMMON, "trainer=ddp", "data.batch_size=32",
                          f"hydra.run.dir={ddp_dir}"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**base, **slurm, "OMP_NUM_THREADS": "1", "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)})
        for rank in range(2)
    ]
    outputs = [task.communicate(timeout=300)[0] for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert "distributed: 2 processes, gloo backend" in outputs[0]
    _assert_matches_one_process(ddp_dir, tmp_path, [])


def _assert_matches_one_process(ddp_dir: Path, tmp_path: Path, extra: list[str]) -> None:
    single = train(make_cfg(tmp_path / "single", *COMMON, *extra, "data.batch_size=64"))
    ddp = json.loads((ddp_dir / "metrics.json").read_text())
    assert ddp["global_step"] == single["global_step"] == (20 if "trainer.accumulate_grad_batches=2" in extra else 38)
    a = load_checkpoint(ddp_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")["model"]
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4)
    # train metrics are averaged over the ranks; test metrics are computed on the full split everywhere
    assert abs(ddp["final"]["train/loss"] - single["final"]["train/loss"]) < 1e-3
    assert abs(ddp["test"]["acc"] - single["test"]["acc"]) < 0.01
    # rank 0 alone writes: one run directory, one metrics file, one set of checkpoints
    names = sorted(p.name for p in (ddp_dir / "checkpoints").iterdir())
    assert len(names) == 3 and names[0] == "best.pt" and names[1].startswith("epoch=") and names[2] == "last.pt"


def test_loader_shards_cover_each_global_batch() -> None:
    from zoo.data.loaders import TensorLoader

    x, y = torch.arange(10.0).view(10, 1), torch.arange(10)
    whole = [b.tolist() for _, b in TensorLoader(x, y, 4, shuffle=True, seed=3)]
    shards = [[b.tolist() for _, b in TensorLoader(x, y, 2, shuffle=True, seed=3).shard(r, 2)] for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(whole) == 3
    for i, batch in enumerate(whole[:2]):  # full global batches: the two halves, in rank order
        assert shards[0][i] + shards[1][i] == batch
    # the last, partial batch is padded by wrapping around so both ranks get equal halves
    assert len(shards[0][2]) == len(shards[1][2]) == 1


def test_dataloader_path_shards_with_a_distributed_sampler() -> None:
    from torch.utils.data import TensorDataset

    from zoo.data.loaders import ImageLoader

    data = TensorDataset(torch.arange(12.0).view(12, 1), torch.arange(12))
    seen = []
    for rank in range(2):
        loader = ImageLoader(data, batch_size=3, shuffle=True, seed=5).shard(rank, 2)
        loader.set_epoch(1)
        seen.append(sorted(int(v) for _, y in loader for v in y))
        assert len(loader) == 2
    assert sorted(seen[0] + seen[1]) == list(range(12)) and not set(seen[0]) & set(seen[1])
