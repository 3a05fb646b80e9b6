"""How a training run is launched: which rank this process is, and what the trainer refuses to run.

Lightning's ``ddp`` strategy runs the whole ``tft-trainer`` command once per device: the process
the operator started is rank 0 of its node, and Lightning's subprocess launcher re-executes the
same command line for local ranks 1..N-1 with ``LOCAL_RANK`` set (beside ``MASTER_ADDR``,
``MASTER_PORT``, ``NODE_RANK`` and ``WORLD_SIZE``); on other nodes the operator (or torchrun,
SLURM, LSF, MPI) starts the command with ``NODE_RANK`` or ``RANK``/``SLURM_PROCID`` set. Only global
rank 0 may take the lock, write to the registry and write the metrics file, and it must know that
before training starts (the lock comes first), so the rank is read from the environment the way
Lightning will read it, before Lightning has started anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

#: Strategies whose workers are started by Lightning inside one Python process (spawned or forked)
#: instead of re-running the command: see :func:`launch_problem`.
_IN_PROCESS_LAUNCHES = ("spawn", "fork", "notebook")
#: Lightning's short precision names and the full ones they stand for.
_PRECISION_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}


@dataclass(frozen=True)
class LaunchRank:
    """Where this process sits in a (possibly) distributed run, as known before Lightning starts."""

    node_rank: int
    local_rank: int
    #: None where only the node and local rank are known (a node started by hand without WORLD_SIZE).
    global_rank: int | None

    @property
    def is_zero(self) -> bool:
        if self.global_rank is not None:
            return self.global_rank == 0
        return self.node_rank == 0 and self.local_rank == 0

    def __str__(self) -> str:
        where = f"node {self.node_rank}, local rank {self.local_rank}"
        return f"global rank {self.global_rank} ({where})" if self.global_rank is not None else where


def launch_rank(num_nodes: int = 1, env: Mapping[str, str] | None = None) -> LaunchRank:
    """This process's rank, read the way Lightning's cluster environments will read it.

    Lightning prefers torchrun, then SLURM, LSF and MPI when they launched the processes, and
    otherwise uses its own variables (``NODE_RANK`` or ``GROUP_RANK``, ``LOCAL_RANK``), which its
    launcher sets only in the children it starts: the command the operator ran has none of them
    and is rank 0. ``env`` (tests) replaces ``os.environ`` for Lightning's own variables only.
    """
    if env is None:
        from lightning.fabric.plugins.environments import (
            LSFEnvironment,
            MPIEnvironment,
            SLURMEnvironment,
            TorchElasticEnvironment,
        )

        for kind in (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment, MPIEnvironment):
            if kind.detect():
                cluster = kind()
                return LaunchRank(cluster.node_rank(), cluster.local_rank(), cluster.global_rank())
        env = os.environ
    node = int(env.get("NODE_RANK", env.get("GROUP_RANK", 0)))
    local = int(env.get("LOCAL_RANK", 0))
    world = int(env.get("WORLD_SIZE", 0))
    if world and num_nodes > 0 and world % num_nodes == 0:
        return LaunchRank(node, local, node * (world // num_nodes) + local)
    return LaunchRank(node, local, None)


def runs_on_cpu(accelerator: str) -> bool:
    """Whether Lightning will train on the CPU with this ``--accelerator`` (``auto``: no GPU found)."""
    if accelerator == "cpu":
        return True
    if accelerator != "auto":
        return False
    import torch

    return not torch.cuda.is_available() and not torch.backends.mps.is_available()


def default_precision(accelerator: str) -> str:
    """bf16 mixed precision where it runs and pays (a CUDA GPU with bf16), 32-bit everywhere else.

    The accelerator counts, not only the machine: ``--accelerator cpu`` on a GPU host trains on the
    CPU, where bf16-mixed crashes (see :func:`launch_problem`).
    """
    import torch

    if runs_on_cpu(accelerator) or not torch.cuda.is_available() or not torch.cuda.is_bf16_supported():
        return "32-true"
    return "bf16-mixed"


def launch_problem(strategy: str, accelerator: str, precision: str | None) -> str | None:
    """One line saying why this launch cannot train, or None; checked before the lock and the data.

    Refused, each measured with Lightning 2.6, torch 2.13 and pytorch-forecasting 1.8:

    - strategies that start their workers inside this process (``ddp_spawn``, ``ddp_fork``,
      ``ddp_notebook``): the trainer's run (rank 0 gates, saves and promotes after fitting) needs
      every rank to run the command, as ``ddp`` does; a spawned worker would hand back only the
      weights, not the best epoch or the samples seen;
    - ``16-mixed`` (and the ``16``-bit ones): the TFT's attention masks scores with -1e9, which
      float16 cannot hold ("value cannot be converted to type c10::Half without overflow");
    - ``bf16-true``, ``16-true``, ``64-true``: the network's inputs stay float32 while its weights
      are cast, and its first linear layer fails on the mixed dtypes;
    - ``bf16-mixed`` on a CPU: oneDNN has no bfloat16 LSTM ("could not create a primitive
      descriptor for the LSTM forward propagation primitive"), so the first step would crash.
    """
    lowered = strategy.lower()
    if any(word in lowered for word in _IN_PROCESS_LAUNCHES):
        return (f"--strategy {strategy} is not supported: its workers start inside this process and hand back "
                "only the weights; use --strategy ddp, which runs this command once per device (docs/TRAINING.md)")
    if precision is None:
        return None
    name = _PRECISION_ALIASES.get(precision, precision)
    if name == "32-true":
        return None
    if name == "bf16-mixed":
        if runs_on_cpu(accelerator):
            return ("--precision bf16-mixed cannot train this network on a CPU: oneDNN has no bfloat16 LSTM; "
                    "use 32-true (the default there), or bf16-mixed on a GPU")
        return None
    if name == "16-mixed":
        return ("--precision 16-mixed cannot train this network: its attention masks with -1e9, which float16 "
                "cannot hold; use bf16-mixed on a GPU, or 32-true")
    return (f"--precision {precision} cannot train this network: only 32-true, and bf16-mixed on a GPU, do "
            "(its inputs stay float32)")


def rank_and_world() -> tuple[int, int]:
    """(global rank, world size) of the process group once Lightning has set it up; (0, 1) otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
