"""The forgetting guard: held-out general code, and the gate on real adapters (embedded model)."""

from __future__ import annotations

import contextlib
import io
import json
import sys

import pytest

from codetune.evaluate import general as G
from codetune.evaluate.gate import decide
from codetune.evaluate.runner import _general_entry, _side_model

N_FILES, MAX_TOKENS = 12, 96  # the gate needs >= 10 files; short windows keep it to seconds


def test_held_out_files_skip_the_training_codebase(tmp_path):
    # Guards: a codebase built from the standard library never lends its own files to the
    # guard (the demo's codebase is ~70 stdlib modules), and the draw is stable.
    first = G.held_out_files(N_FILES)
    assert len({f.path for f in first}) == N_FILES
    assert all(f.path.split("/")[0] in G.PACKAGES for f in first)
    assert all(f.text.lstrip().startswith(("def ", "class ", "async def ", "@")) for f in first)
    assert [f.path for f in G.held_out_files(N_FILES)] == [f.path for f in first]
    data = tmp_path / "data"
    data.mkdir()
    rec = {"task": "bugfix", "messages": [], "meta": {"path": first[0].path}}
    (data / "train.jsonl").write_text(json.dumps(rec) + "\n")
    assert first[0].path not in {f.path for f in G.held_out_files(N_FILES, data)}


@pytest.fixture(scope="module")
def base_lm(embedded_model_dir):
    from codetune.generation import load_model

    return load_model(str(embedded_model_dir))


@pytest.fixture(scope="module")
def held_out(base_lm):
    files = G.held_out_files(N_FILES)
    ids = G.encode(base_lm.tokenizer, files, MAX_TOKENS)
    base = G.per_file_loss(base_lm.model, ids, base_lm.tokenizer.pad_token_id)
    return files, ids, base


def _gate(base_lm, held_out, adapter_dir):
    files, ids, base = held_out
    side, _, cleanup = _side_model(base_lm, adapter_dir, merge=True)
    try:
        cand = G.per_file_loss(side.model, ids, base_lm.tokenizer.pad_token_id)
    finally:
        cleanup()
    entry = _general_entry(files, ids, {"base": base, "candidate": cand}, ("base", "candidate"))
    (line,) = [r for r in decide({"suites": {"general": entry}}).reasons if "general" in r[:20]]
    return entry, line


@pytest.fixture(scope="module")
def damaged_adapter(embedded_model_dir, tmp_path_factory):
    """LoRA on every linear layer with large random weights: a broken fine-tune."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=64, target_modules="all-linear", init_lora_weights=False)
    peft = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_" in name:
                p.mul_(4.0)
    out = tmp_path_factory.mktemp("damaged")
    peft.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def trained_adapter(tmp_path_factory, embedded_model_dir, repo_root):
    """A real QLoRA adapter: the training tests' tiny dataset and schedule (2 steps)."""
    sys.path.insert(0, str(repo_root / "tests" / "train"))
    try:
        from train_fixtures import TINY, one_torch_thread, write_dataset
    finally:
        sys.path.pop(0)
    from codetune.train import load_train_config, run_training

    root = tmp_path_factory.mktemp("trained")
    data = write_dataset(root / "data", n_train=4, n_val=2)
    cfg = load_train_config("cpu-smollm2", TINY + ["max_steps=2"])
    with contextlib.redirect_stdout(io.StringIO()), one_torch_thread():
        run_training(cfg, data, root / "adapter", checkpoints_dir=root / "ckpt", merge=True)
    return root / "adapter"


@pytest.mark.slow
def test_guard_trips_on_a_damaged_adapter(base_lm, held_out, damaged_adapter):
    # Guards the point of the guard: an adapter that wrecks general code modelling fails,
    # even on a base model that scores 0 on HumanEval.
    entry, line = _gate(base_lm, held_out, damaged_adapter)
    assert entry["candidate"]["loss"] > 1.5 * entry["base"]["loss"]
    assert line.startswith("FAIL general-code loss"), line
    assert "damages general code" in line and f"0 improved / {N_FILES} regressed" in line


@pytest.mark.slow
def test_guard_passes_a_trained_adapter(base_lm, held_out, trained_adapter):
    # Guards against a guard that trips on any change: a real (narrow) fine-tune passes.
    entry, line = _gate(base_lm, held_out, trained_adapter)
    assert entry["candidate"]["loss"] != entry["base"]["loss"]  # the adapter did something
    assert line.startswith("PASS general-code loss"), line
