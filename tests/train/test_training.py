"""Real 4-bit QLoRA training on the embedded model (CPU): one short run shared by the tests."""

from __future__ import annotations

import contextlib
import io
import json
import stat

import pytest
from train_fixtures import TINY, one_torch_thread, write_dataset

from codetune.metrics import parse_metrics
from codetune.train import load_train_config, run_training

pytestmark = pytest.mark.slow

SUMMARY_KEYS = {
    "config",
    "steps",
    "tokens_seen",
    "loss_bearing_tokens",
    "loss_bearing_tokens_per_second",
    "peak_memory_bytes",
    "wall_seconds",
    "train_loss",
    "validation_loss",
    "base_validation_loss",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, embedded_model_dir):
    root = tmp_path_factory.mktemp("train")
    data = write_dataset(root / "data", n_train=2, n_val=2)
    cfg = load_train_config("cpu-smollm2", TINY + ["max_steps=2"])
    out = root / "adapter"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), one_torch_thread():
        summary = run_training(cfg, data, out, checkpoints_dir=root / "ckpt", merge=True)
    return out, summary, buf.getvalue()


def test_training_lowers_validation_loss(trained):
    # A few real optimizer steps must reduce the loss on the (seen) validation examples.
    _, s, _ = trained
    assert s["steps"] == 2
    assert s["validation_loss"] < s["base_validation_loss"]


def test_outputs_and_summary(trained):
    # The adapter-dir contract: PEFT files, tokenizer, summary with the agreed keys, PNG.
    out, s, _ = trained
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json"):
        assert (out / name).is_file(), name
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    on_disk = json.loads((out / "training_summary.json").read_text())
    assert SUMMARY_KEYS <= set(on_disk)
    assert 0 < on_disk["loss_bearing_tokens"] < on_disk["tokens_seen"]  # prompt has no loss
    assert on_disk["config"]["quantization"] == "4bit"
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        "embedded"
    )
    assert not [p for p in out.iterdir() if p.name.startswith(".staging")]
    # safetensors writes its files 0600 whatever the umask: published weights (the adapter's
    # and merged/'s) must be as readable as the config beside them — a server running as
    # another user loads them
    config_mode = stat.S_IMODE((out / "adapter_config.json").stat().st_mode)
    weights = list(out.rglob("*.safetensors"))
    assert len(weights) == 2, weights
    assert {stat.S_IMODE(w.stat().st_mode) for w in weights} == {config_mode}


def test_metric_lines_on_stdout(trained):
    # One parseable metric line per log step (the SageMaker MetricDefinitions contract).
    _, _, stdout = trained
    lines = [parse_metrics(line) for line in stdout.splitlines()]
    steps = [m["step"] for m in lines if m and "loss" in m]
    assert steps == [1.0, 2.0]
    assert all("tokens_per_second" in m for m in lines if m and "loss" in m)


def test_adapter_loads_with_peft_and_changes_output(trained, embedded_model_dir):
    # The saved adapter is a valid PEFT adapter and actually changes the model's logits.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, _, _ = trained
    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(out)).eval()
    x = torch.tensor([[1, 504, 3458, 28, 253, 1013, 30]])
    with torch.no_grad():
        tuned = model(input_ids=x).logits
        with model.disable_adapter():
            plain = model(input_ids=x).logits
    assert (tuned - plain).abs().max() > 1e-2


def test_merge_writes_a_full_model_equal_to_base_plus_adapter(trained, embedded_model_dir):
    # --merge: merged/ is a plain transformers model whose output equals base + adapter.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, _, _ = trained
    merged = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, str(out)).eval()
    x = torch.tensor([[1, 504, 3458, 28, 253, 1013, 30]])
    with torch.no_grad():
        a, b = merged(input_ids=x).logits, peft_model(input_ids=x).logits
    assert torch.allclose(a, b, atol=1e-3, rtol=1e-3), (a - b).abs().max()
