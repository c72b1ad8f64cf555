"""The shipped GPU training configs fit the GPUs their names promise, per the real planner,
and the AWS example input runs on such a GPU (the workflow plans with the same functions)."""

from __future__ import annotations

import json

import yaml

from codetune.plan import check_instance, make_plan, recommend_instance, setup_for
from codetune.plan.instances import get_instance, load_table
from codetune.workflow import validate_run_input

QWEN = "gpu-24gb-qwen-coder-1.5b"
STABLE = "gpu-10gb-stable-code-3b"


def _config(repo_root, name: str) -> dict:
    return yaml.safe_load((repo_root / "training_image" / "configs" / f"{name}.yaml").read_text())


def test_qwen_24gb_config_fits_one_24gb_gpu(repo_root):
    # guards: the worst case (every example max_seq_length tokens, 152k-vocab fp32 logits) fits
    # ml.g5.xlarge's A10G; at micro-batch 8 it needed 49 GB and "auto" chose a $47/h p4de.
    check_instance("ml.g5.xlarge", None, QWEN, {})  # raises PlanError when it does not fit
    table = load_table()
    chosen = get_instance(table, recommend_instance(None, QWEN, {}))
    assert chosen.gpu_memory_gb <= 24, chosen
    cfg = _config(repo_root, QWEN)
    # the fix must keep the optimizer step's 16 examples (micro-batch x accumulation)
    assert cfg["per_device_batch_size"] * cfg["gradient_accumulation_steps"] == 16


def test_stable_code_10gb_config_fits_a_10gb_gpu():
    # guards: the config named for a 10 GB consumer GPU (RTX 3080) needs at most 10 GB of it,
    # with the same usable fraction the planner applies to every instance type
    arch, setup = setup_for(None, STABLE, {})
    plan = make_plan(arch, setup)
    assert plan.memory.total <= 10 * plan.table.usable_fraction, plan.memory.as_dict()
    check_instance("ml.g4dn.xlarge", None, STABLE, {})


def test_aws_example_trains_the_gpu_config_on_a_24gb_gpu(repo_root):
    # guards: examples/run-input.json (what StartExecutionCommand sends) names a shipped GPU
    # config and an instance type the real planner accepts, not the CPU demo config
    doc = json.loads((repo_root / "examples" / "run-input.json").read_text())
    req = validate_run_input(
        doc, execution_name="example", artifact_bucket="codetune-inputs-123456789012"
    )
    assert req.training.config.startswith("gpu-")
    assert get_instance(load_table(), req.training.instance_type).gpu_memory_gb >= 24
