"""Instance choice for the seeds' scenarios, the --json contract, and the CLI's bad input."""

from __future__ import annotations

import json

import pytest
import yaml

from codetune.cli import main
from codetune.plan import Setup, make_plan, nearest_option
from codetune.plan.arch import resolve_architecture
from codetune.plan.instances import INSTANCES_FILE, load_table


@pytest.fixture
def table_with_10gb_gpu(tmp_path):
    data = yaml.safe_load(INSTANCES_FILE.read_text())
    data["gpus"]["RTX3080"] = {"memory_gib": 10, "tflops": 60}
    data["instances"] = {
        "workstation.10gb": {
            "gpu": "RTX3080",
            "gpus": 1,
            "vcpus": 8,
            "ram_gib": 32,
            "price_usd_per_hour": 0.1,
        }
    }
    path = tmp_path / "instances.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_stable_code_3b_qlora_fits_a_10gb_gpu_but_full_finetune_does_not(table_with_10gb_gpu):
    # Guards seed scenario 1: QLoRA of stable-code-3b fits a 10 GB GPU; full fine-tuning not.
    table = load_table(table_with_10gb_gpu)
    arch = resolve_architecture("stabilityai/stable-code-3b")
    qlora = make_plan(arch, Setup(seq_len=1024), table=table)
    assert qlora.cheapest == "workstation.10gb"
    full = make_plan(arch, Setup(lora_rank=0, quantization="none"), table=table)
    assert full.cheapest is None and full.memory.total > 40


def test_8b_qlora_picks_a_16gb_t4_and_needs_less_than_the_seeds_20_gb():
    # Guards seed scenario 2: 8B QLoRA at 1k tokens fits one 16 GB T4 (the cheapest), well
    # under the seed's "20-25 GB" (see docs/planner.md for why).
    plan = make_plan(resolve_architecture("meta-llama/Llama-3.1-8B"), Setup(seq_len=1024))
    assert plan.cheapest == "ml.g4dn.xlarge"
    assert 8 < plan.memory.total < 16


def test_70b_qlora_needs_a_48gb_class_gpu_and_full_finetune_fits_nothing():
    # Guards seed scenario 3: 70B QLoRA does not fit 24 GB GPUs, fits 48/80 GB ones; full
    # fine-tuning (>1 TB) fits nothing and the advice names the change that makes it fit.
    arch = resolve_architecture("meta-llama/Llama-3.1-70B")
    plan = make_plan(arch, Setup(seq_len=1024))
    assert not plan.fits["ml.g5.xlarge"] and not plan.fits["ml.g6.48xlarge"]
    assert plan.fits["ml.p4de.24xlarge"] and plan.fits["ml.p5.48xlarge"]
    assert plan.cheapest in {"ml.g6e.xlarge", "ml.p4de.24xlarge"}
    full = Setup(lora_rank=0, quantization="none", grad_checkpointing=False)
    assert make_plan(arch, full).cheapest is None
    advice = nearest_option(arch, full)
    assert "enable gradient checkpointing" in advice and "QLoRA" in advice and "fits" in advice


def test_json_output_has_exactly_the_issue_shape(capsys):
    # Guards the --json contract: memory_gb/fits/cheapest/estimate with the stated keys.
    rc = main(["plan", "--model", "meta-llama/Llama-3.1-8B", "--tokens", "1e7", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"memory_gb", "fits", "cheapest", "estimate"}
    assert set(out["memory_gb"]) == {
        "weights",
        "lora",
        "gradients",
        "optimizer",
        "activations",
        "overhead",
        "total",
    }
    assert out["memory_gb"]["total"] == pytest.approx(
        sum(v for k, v in out["memory_gb"].items() if k != "total"), abs=0.01
    )
    assert all(isinstance(v, bool) for v in out["fits"].values())
    assert out["cheapest"] in out["fits"] and out["fits"][out["cheapest"]]
    assert set(out["estimate"]) == {"hours", "usd"} and out["estimate"]["usd"] > 0


def test_more_tokens_cost_proportionally_more(capsys):
    # Guards the time/cost estimate: linear in the token count on the same instance.
    args = ["plan", "--model", "stabilityai/stable-code-3b", "--json", "--tokens"]
    main([*args, "1e6"])
    one = json.loads(capsys.readouterr().out)
    main([*args, "4e6"])
    four = json.loads(capsys.readouterr().out)
    assert one["cheapest"] == four["cheapest"]
    assert four["estimate"]["hours"] == pytest.approx(4 * one["estimate"]["hours"], rel=0.01)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--model", "nobody/nothing"], "unknown model"),
        (["--layers", "2", "--hidden", "64"], "missing architecture fields: --heads, --vocab"),
        (["--model", "embedded", "--seq-len", "0"], "seq len must be a positive integer"),
        (["--model", "embedded", "--layers", "3"], "not both"),
        ([], "say which model"),
    ],
)
def test_cli_bad_input_exits_2_with_a_message(argv, match, capsys):
    # Guards bad input at the CLI: exit status 2 and a message naming what to change.
    assert main(["plan", *argv]) == 2
    assert match in capsys.readouterr().err


def test_nothing_fits_text_output_shows_nearest_option(capsys):
    # Guards the text output: when nothing fits it says so and gives the nearest option.
    argv = ["plan", "--model", "meta-llama/Llama-3.1-70B", "--lora-rank", "0"]
    assert main([*argv, "--no-grad-checkpointing"]) == 0
    out = capsys.readouterr().out
    assert "nothing fits. Nearest option:" in out
