"""Fast checks (no model load): shipped configs, config validation, bad inputs failing at
start-up and checkpoint validity (the torchrun launch plan: test_world_size.py)."""

from __future__ import annotations

import json

import pytest

from codetune.cli import main
from codetune.errors import ConfigError
from codetune.train import checkpoints as ckpts
from codetune.train.config import configs_dir, load_train_config, shipped_configs


def test_at_least_three_configs_ship():
    # Guards the promise: CPU, 24 GB GPU and 10 GB GPU configs exist.
    names = shipped_configs()
    assert "cpu-smollm2" in names and len(names) >= 3


@pytest.mark.parametrize("name", shipped_configs())
def test_every_shipped_config_loads_and_validates(name):
    # A shipped config must load with no unknown keys and pass validation.
    cfg = load_train_config(name)
    assert cfg.max_steps >= 1 and cfg.lora.rank >= 1
    text = (configs_dir() / f"{name}.yaml").read_text()
    assert text.startswith("#"), "each config starts with a header comment saying when to use it"


def test_unknown_key_fails(tmp_path):
    # A typo in a config must fail, naming the key.
    p = tmp_path / "c.yaml"
    p.write_text("lora:\n  rnak: 8\n")
    with pytest.raises(ConfigError, match="rnak"):
        load_train_config(str(p))


def test_config_dir_env_var(tmp_path, monkeypatch):
    # The image finds configs through CODETUNE_CONFIG_DIR.
    (tmp_path / "mine.yaml").write_text("max_steps: 7\n")
    monkeypatch.setenv("CODETUNE_CONFIG_DIR", str(tmp_path))
    assert load_train_config("mine").max_steps == 7


def test_dict_overrides_apply():
    # The local runner passes overrides as a dict of dotted keys.
    cfg = load_train_config("cpu-smollm2", {"lora.rank": 4, "max_steps": 2})
    assert (cfg.lora.rank, cfg.max_steps) == (4, 2)


def _cli(capsys, *argv) -> tuple[int, str]:
    rc = main(["train", *argv])
    return rc, capsys.readouterr().err


def _no_adapter(out):
    return not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    "setup, extra, needle",
    [
        ("missing_dir", [], "--data"),
        ("empty_train", [], "train.jsonl has no records"),
        ("no_assistant", [], "no assistant turn"),
        ("ok", ["--set", "lora.rnak=4"], "rnak"),
        ("ok", ["--set", "quantization=4bit+8bit"], "4-bit and 8-bit cannot both be set"),
        ("ok", ["--spot"], "--spot needs --checkpoints"),
        ("ok", ["--base-model", "/nonexistent/model"], "/nonexistent/model"),
        ("ok", ["--config", "no-such-config"], "--config no-such-config"),
        ("no_bugfix", ["--set", "rl.enabled=true"], "no bugfix examples"),
    ],
)
def test_bad_input_fails_at_start_up(tmp_path, capsys, dataset, setup, extra, needle):
    # Each bad input: exit 2, a message naming the option or file, no adapter written.
    data = dataset
    if setup == "missing_dir":
        data = tmp_path / "nope"
    elif setup == "empty_train":
        (data / "train.jsonl").write_text("")
    elif setup == "no_assistant":
        rec = json.loads((data / "train.jsonl").read_text().splitlines()[0])
        rec["messages"] = rec["messages"][:1]
        (data / "train.jsonl").write_text(json.dumps(rec) + "\n")
    elif setup == "no_bugfix":  # rl.enabled must fail before SFT, not after it
        recs = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
        for rec in recs:
            rec["task"] = "complete"
        (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "out"
    rc, err = _cli(capsys, "--data", str(data), "--out", str(out), *extra)
    assert rc == 2, err
    assert needle in err
    assert _no_adapter(out)


def test_torn_checkpoint_is_never_valid(tmp_path):
    # Only a checkpoint whose marker lists matching files is resumable; a truncated file or a
    # missing marker makes it torn, and torn ones are removed.
    good = tmp_path / "checkpoint-2"
    good.mkdir()
    (good / "trainer_state.json").write_text("{}")
    (good / "adapter_model.safetensors").write_bytes(b"x" * 10)
    ckpts.mark_complete(good)
    torn = tmp_path / "checkpoint-3"
    torn.mkdir()
    (torn / "trainer_state.json").write_text("{}")
    assert ckpts.newest_valid(tmp_path) == good
    (good / "adapter_model.safetensors").write_bytes(b"x" * 5)  # truncated after marking
    assert ckpts.newest_valid(tmp_path) is None
    assert set(ckpts.remove_torn(tmp_path)) == {good, torn}
    assert not torn.exists()
