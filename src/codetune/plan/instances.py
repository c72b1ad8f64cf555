"""The instance table (``instances.yaml``), fitting, and the time/cost estimate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from codetune.plan.arch import Architecture, PlanError
from codetune.plan.memory import GB, Breakdown, Setup

INSTANCES_FILE = Path(__file__).with_name("instances.yaml")
GIB = 2**30


@dataclass(frozen=True)
class Instance:
    """One SageMaker training instance type."""

    name: str
    gpu: str
    gpus: int
    gpu_memory_gb: float  # one GPU, GB = 1e9 bytes
    tflops: float  # one GPU, dense bf16/fp16
    vcpus: int
    ram_gib: float
    price_usd_per_hour: float


@dataclass(frozen=True)
class Table:
    """The parsed instance table."""

    instances: dict[str, Instance]
    usable_fraction: float
    mfu: float
    prices: dict

    def usable_gb(self, inst: Instance) -> float:
        """GPU memory one training process may fill."""
        return inst.gpu_memory_gb * self.usable_fraction


def load_table(path: Path | str | None = None) -> Table:
    """Read ``instances.yaml`` (or ``path``); raises PlanError on a malformed table."""
    path = Path(path) if path else INSTANCES_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        gpus = data["gpus"]
        instances = {}
        for name, row in data["instances"].items():
            g = gpus[row["gpu"]]
            instances[name] = Instance(
                name=name,
                gpu=row["gpu"],
                gpus=int(row["gpus"]),
                gpu_memory_gb=float(g["memory_gib"]) * GIB / GB,
                tflops=float(g["tflops"]),
                vcpus=int(row["vcpus"]),
                ram_gib=float(row["ram_gib"]),
                price_usd_per_hour=float(row["price_usd_per_hour"]),
            )
        return Table(instances, float(data["usable_fraction"]), float(data["mfu"]), data["prices"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise PlanError(f"instance table {path} is malformed ({type(e).__name__}: {e})") from e


def fits(table: Table, breakdown: Breakdown) -> dict[str, bool]:
    """Instance type -> whether one training process fits on one of its GPUs.

    codetune trains data-parallel (one full replica per GPU), so the per-process peak must
    fit one GPU whatever the GPU count."""
    return {n: breakdown.total <= table.usable_gb(i) for n, i in table.instances.items()}


def flops_per_token(arch: Architecture, setup: Setup) -> float:
    """Training FLOPs per token: forward 2N, backward 2N for activation gradients (+2N for
    weight gradients when every weight trains), +2N recomputation with checkpointing."""
    n = arch.params
    f = 2 * n + 2 * n + (2 * n if setup.lora_rank == 0 else 0)
    if setup.grad_checkpointing:
        f += 2 * n
    # attention scores: 2 * 2 * layers * seq * hidden per token forward, x3 with backward
    f += 12 * arch.layers * setup.seq_len * arch.hidden / 2  # causal: half the matrix
    return f


def estimate_time(
    table: Table, inst: Instance, arch: Architecture, setup: Setup, tokens: int
) -> dict[str, float]:
    """Hours and USD to train on ``tokens`` tokens on ``inst`` (all its GPUs)."""
    per_second = inst.gpus * inst.tflops * 1e12 * table.mfu / flops_per_token(arch, setup)
    hours = tokens / per_second / 3600
    return {"hours": hours, "usd": hours * inst.price_usd_per_hour}


def cheapest(
    table: Table,
    fit: dict[str, bool],
    arch: Architecture | None = None,
    setup: Setup | None = None,
    tokens: int | None = None,
) -> str | None:
    """The fitting instance with the lowest cost for ``tokens`` (or lowest hourly price
    without a token count); ties go to fewer GPUs, then the name."""

    def key(name: str):
        inst = table.instances[name]
        cost = (
            estimate_time(table, inst, arch, setup, tokens)["usd"]
            if tokens and arch is not None and setup is not None
            else inst.price_usd_per_hour
        )
        return (cost, inst.gpus, name)

    ok = [n for n, f in fit.items() if f]
    return min(ok, key=key) if ok else None


def get_instance(table: Table, name: str) -> Instance:
    """Look up an instance type; raises PlanError listing the known ones."""
    inst = table.instances.get(name)
    if inst is None:
        raise PlanError(
            f"instance type {name!r} is not in the planner's table ({INSTANCES_FILE}); "
            f"known: {', '.join(sorted(table.instances))}"
        )
    return inst
