"""Memory and cost planner: will this training fit, on which instance, at what cost.

Public API (used by the workflow's ValidateRequest for ``"instanceType": "auto"`` and by
``codetune train --remote``)::

    recommend_instance(base_model, config_name, overrides) -> "ml.g5.xlarge"
    check_instance(instance_type, base_model, config_name, overrides) -> None

Both raise :class:`PlanError` (a ``CodetuneError``) with the numbers in the message.
The formula is in :mod:`codetune.plan.memory` and explained in ``docs/planner.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from codetune.plan.arch import Architecture, PlanError, resolve_architecture
from codetune.plan.instances import (
    Table,
    cheapest,
    estimate_time,
    fits,
    get_instance,
    load_table,
)
from codetune.plan.memory import Breakdown, Setup, estimate
from codetune.plan.training import load_training_config, setup_from_config

__all__ = [
    "Architecture",
    "Breakdown",
    "Plan",
    "PlanError",
    "Setup",
    "check_instance",
    "make_plan",
    "nearest_option",
    "recommend_instance",
    "setup_for",
]


@dataclass
class Plan:
    """The planner's answer for one architecture + setup."""

    arch: Architecture
    setup: Setup
    memory: Breakdown
    fits: dict[str, bool]
    cheapest: str | None
    estimate: dict[str, float] | None
    table: Table

    def as_json(self) -> dict:
        """The object ``codetune plan --json`` prints (a stable shape: scripts parse it)."""
        est = None
        if self.estimate is not None:
            est = {"hours": round(self.estimate["hours"], 3), "usd": round(self.estimate["usd"], 2)}
        return {
            "memory_gb": self.memory.as_dict(),
            "fits": dict(self.fits),
            "cheapest": self.cheapest,
            "estimate": est,
        }


def make_plan(
    arch: Architecture, setup: Setup, tokens: int | None = None, table: Table | None = None
) -> Plan:
    """Memory breakdown, fit per instance, cheapest instance and time/cost for ``tokens``."""
    if tokens is not None and (isinstance(tokens, bool) or tokens <= 0):
        raise PlanError(f"--tokens must be a positive number, got {tokens!r}")
    table = table or load_table()
    mem = estimate(arch, setup)
    fit = fits(table, mem) if setup.device == "gpu" else dict.fromkeys(table.instances, False)
    best = cheapest(table, fit, arch, setup, tokens)
    est = None
    if best is not None and tokens:
        est = estimate_time(table, table.instances[best], arch, setup, tokens)
    return Plan(arch, setup, mem, fit, best, est, table)


# Changes tried, in order, when nothing fits: each is a smaller-memory variant of the setup.
def _alternatives(setup: Setup) -> list[tuple[str, Setup]]:
    out: list[tuple[str, Setup]] = []
    rep = dataclasses.replace
    if not setup.grad_checkpointing:
        out.append(("enable gradient checkpointing", rep(setup, grad_checkpointing=True)))
    if setup.lora_rank == 0:
        out.append(
            ("use QLoRA (4-bit, lora rank 16)", rep(setup, lora_rank=16, quantization="4bit"))
        )
    elif setup.quantization != "4bit":
        out.append(("use 4-bit quantization", rep(setup, quantization="4bit")))
    if setup.micro_batch > 1:
        out.append(("use micro batch 1 (raise gradient accumulation)", rep(setup, micro_batch=1)))
    s = setup.seq_len
    while s > 256:
        s //= 2
        out.append((f"shorten sequences to {s} tokens", rep(setup, seq_len=s)))
    return out


def nearest_option(arch: Architecture, setup: Setup, table: Table | None = None) -> str:
    """Advice for a setup that fits no instance: the cumulative changes (checkpointing,
    4-bit, micro batch 1, shorter sequences) that make it fit, and where; or the largest
    GPU and by how much it is short."""
    table = table or load_table()
    current, steps = setup, []
    while alts := _alternatives(current):
        # apply changes cumulatively, in order of least harm to training quality
        label, current = alts[0]
        steps.append(label)
        p = make_plan(arch, current, table=table)
        if p.cheapest:
            mem = p.memory.total
            return (
                f"{'; '.join(steps)}: then it needs {mem:.1f} GB and fits "
                f"{p.cheapest} (${table.instances[p.cheapest].price_usd_per_hour:.2f}/h)"
            )
    biggest = max(table.instances.values(), key=lambda i: (i.gpu_memory_gb, -i.price_usd_per_hour))
    need = estimate(arch, current).total
    return (
        f"even with {'; '.join(steps) or 'this setup'} it needs {need:.1f} GB per GPU; the "
        f"largest GPU in the table ({biggest.name}, {biggest.gpu}) offers "
        f"{table.usable_gb(biggest):.1f} GB usable. Use a smaller base model"
    )


def setup_for(
    base_model: str | None, config_name: str, overrides: dict | None
) -> tuple[Architecture, Setup]:
    """Architecture and setup of a training job: ``config_name`` + ``overrides`` give the
    training settings; ``base_model`` (or the config's own ``base_model``) the sizes."""
    cfg = load_training_config(config_name, overrides)
    return resolve_architecture(base_model or cfg.base_model), setup_from_config(cfg, device="gpu")


def recommend_instance(base_model: str, config_name: str, overrides: dict) -> str:
    """The cheapest (hourly on-demand price) training instance type on which the job fits,
    full name (``ml.g5.xlarge``). Raises PlanError with the numbers and the nearest option
    when none fits."""
    arch, setup = setup_for(base_model, config_name, overrides)
    plan = make_plan(arch, setup)
    if plan.cheapest is None:
        raise PlanError(
            f"{arch.name} with config {config_name} needs {plan.memory.total:.1f} GB per GPU "
            f"(weights {plan.memory.weights:.1f}, activations {plan.memory.activations:.1f}); "
            f"no instance type fits. Nearest option: {nearest_option(arch, setup, plan.table)}"
        )
    return plan.cheapest


def check_instance(instance_type: str, base_model: str, config_name: str, overrides: dict) -> None:
    """Raise PlanError (with needed vs available GB and a cheaper/fitting alternative) when
    the job cannot fit one GPU of ``instance_type``; return None when it fits."""
    arch, setup = setup_for(base_model, config_name, overrides)
    plan = make_plan(arch, setup)
    inst = get_instance(plan.table, instance_type)
    if plan.fits[instance_type]:
        return None
    usable = plan.table.usable_gb(inst)
    hint = (
        f"the cheapest that fits is {plan.cheapest}"
        if plan.cheapest
        else f"nothing fits; nearest option: {nearest_option(arch, setup, plan.table)}"
    )
    raise PlanError(
        f"{arch.name} with config {config_name} needs {plan.memory.total:.1f} GB per GPU "
        f"(weights {plan.memory.weights:.1f}, LoRA+grads+optimizer "
        f"{plan.memory.lora + plan.memory.gradients + plan.memory.optimizer:.1f}, activations "
        f"{plan.memory.activations:.1f}, overhead {plan.memory.overhead:.1f}) but "
        f"{instance_type} has {usable:.1f} GB usable per GPU ({inst.gpu}); {hint}"
    )
