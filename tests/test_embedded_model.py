"""The embedded base model: GGUF conversion fidelity and cache integrity."""

from __future__ import annotations

import shutil
import stat

import pytest

from codetune import model as model_mod

PROMPT = "def fibonacci(n):\n    "


@pytest.mark.slow
def test_converted_checkpoint_generates_same_tokens_as_gguf(embedded_model_dir):
    # Guards: the safetensors cache is the same model as the GGUF it came from.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = model_mod.gguf_path()
    assert gguf.is_file()
    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    ids = tok(PROMPT, return_tensors="pt")
    converted = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    with torch.inference_mode():
        a = converted.generate(**ids, max_new_tokens=16, do_sample=False)
        b = reference.generate(**ids, max_new_tokens=16, do_sample=False)
    assert a.tolist() == b.tolist()
    assert a.shape[1] > ids["input_ids"].shape[1]


def test_cache_validation_detects_truncation(embedded_model_dir, tmp_path):
    # Guards: a partial or corrupt cache is never loaded.
    copy = tmp_path / "m"
    shutil.copytree(embedded_model_dir, copy)
    assert model_mod.cache_is_valid(copy)
    st = copy / "model.safetensors"
    with open(st, "r+b") as fh:
        fh.truncate(st.stat().st_size // 2)
    assert not model_mod.cache_is_valid(copy)
    (copy / model_mod.MARKER).unlink()
    assert not model_mod.cache_is_valid(copy)


def test_cache_validation_stamp_does_not_hide_a_rewrite(embedded_model_dir, tmp_path):
    # Guards: the stat stamp that spares re-hashing never vouches for a file written since.
    copy = tmp_path / "m"
    shutil.copytree(embedded_model_dir, copy)
    assert model_mod.cache_is_valid(copy)
    assert (copy / model_mod.VERIFIED).is_file()
    assert model_mod.cache_is_valid(copy)  # from the stamp
    cfg = copy / "config.json"
    data = bytearray(cfg.read_bytes())
    data[-2:-1] = b" " if data[-2:-1] != b" " else b"\t"  # same size, different bytes
    cfg.write_bytes(bytes(data))
    assert not model_mod.cache_is_valid(copy)


@pytest.mark.slow
def test_corrupt_cache_is_rebuilt(embedded_model_dir, tmp_path, monkeypatch):
    # Guards: fetch rebuilds a truncated cache instead of loading it.
    home = tmp_path / "home"
    (home / "downloads").mkdir(parents=True)
    shutil.copy(model_mod.gguf_path(), home / "downloads" / model_mod.EMBEDDED_GGUF)
    shutil.copytree(embedded_model_dir, home / "models" / model_mod.EMBEDDED_NAME)
    monkeypatch.setenv("CODETUNE_HOME", str(home))
    st = model_mod.embedded_dir() / "model.safetensors"
    with open(st, "r+b") as fh:
        fh.truncate(1000)
    assert not model_mod.cache_is_valid(model_mod.embedded_dir())
    path = model_mod.fetch_embedded()
    assert model_mod.cache_is_valid(path)
    assert (path / "model.safetensors").stat().st_size == (
        embedded_model_dir / "model.safetensors"
    ).stat().st_size
    # the rebuilt cache is readable like the files beside it (safetensors writes 0600)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()}
    assert modes["model.safetensors"] == modes["config.json"], modes


def test_resolve_base_model_errors_name_the_problem(tmp_path):
    from codetune.errors import CodetuneError

    with pytest.raises(CodetuneError, match="no config.json"):
        model_mod.resolve_base_model(str(tmp_path))
    with pytest.raises(CodetuneError, match="not found"):
        model_mod.resolve_base_model("./does/not/exist")
    assert model_mod.resolve_base_model("Qwen/Qwen2.5-Coder-1.5B") == "Qwen/Qwen2.5-Coder-1.5B"


def test_home_order_env_then_venv_record_then_default(tmp_path, monkeypatch):
    # Guards: CODETUNE_HOME wins; unset, the environment's record; else the XDG cache.
    import sys

    from codetune import paths

    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CODETUNE_HOME", raising=False)
    assert paths.codetune_home_source() == (tmp_path / "xdg" / "codetune", "default")
    record = paths.remember_home(tmp_path / "checkout" / ".cache" / "codetune")
    assert record == tmp_path / "venv" / "codetune-home"
    assert paths.codetune_home_source() == (
        (tmp_path / "checkout" / ".cache" / "codetune").resolve(),
        str(record),
    )
    monkeypatch.setenv("CODETUNE_HOME", str(tmp_path / "elsewhere"))
    assert paths.codetune_home_source() == (tmp_path / "elsewhere", "CODETUNE_HOME")


def _offline_cli(args, home, extra_env=None):
    """Run this venv's codetune with CODETUNE_HOME unset, an empty HOME and no network: a
    network namespace of its own where unshare works (root, as in CI), and pip pointed nowhere
    in any case, so nothing can be downloaded."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("CODETUNE_HOME", "XDG_CACHE_HOME")}
    env.update(
        HOME=str(home), PIP_NO_INDEX="1", PIP_FIND_LINKS=str(home), PIP_CONFIG_FILE=os.devnull
    )
    env.update(extra_env or {})
    cmd = [sys.executable, "-m", "codetune.cli", *args]
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"]).returncode == 0:
        cmd = ["unshare", "-n", *cmd]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_checkout_commands_use_the_setup_cache_offline(embedded_model_dir, repo_root, tmp_path):
    # Guards: after `make setup`, the README's .venv/bin/codetune commands find the checkout's
    # .cache/codetune without CODETUNE_HOME: no download (the network is gone), no conversion
    # (the cache's files are untouched), nothing created under ~/.cache.
    import sys

    before = {p.name: p.stat().st_mtime_ns for p in embedded_model_dir.iterdir()}
    home = tmp_path / "user"
    home.mkdir()
    gen = _offline_cli(["model", "generate", "--chat", "hi", "--max-new-tokens", "4"], home)
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert gen.stdout.strip()
    val = _offline_cli(
        [
            "run",
            "--local",
            "--input",
            str(repo_root / "examples" / "run-input.local.json"),
            "--out",
            str(tmp_path / "runs"),
            "--validate-only",
        ],
        home,
    )
    assert val.returncode == 0, val.stderr[-2000:]
    from codetune.paths import home_record

    assert home_record().read_text().strip() == str(embedded_model_dir.parents[1].resolve())
    fetch = _offline_cli(["model", "fetch"], home)
    assert fetch.returncode == 0, fetch.stderr[-2000:]
    assert fetch.stdout.strip() == str(embedded_model_dir.resolve())
    assert f"chosen by {home_record()}" in fetch.stderr
    assert not (home / ".cache").exists()
    after = {p.name: p.stat().st_mtime_ns for p in embedded_model_dir.iterdir()}
    assert {k: v for k, v in after.items() if k != model_mod.VERIFIED} == {
        k: v for k, v in before.items() if k != model_mod.VERIFIED
    }
    # ... and CODETUNE_HOME still wins over the record
    other = _offline_cli(["model", "path"], home, {"CODETUNE_HOME": str(tmp_path / "elsewhere")})
    assert other.stdout.strip() == str(tmp_path / "elsewhere" / "models" / model_mod.EMBEDDED_NAME)
    assert sys.prefix != sys.base_prefix  # the record lives in a venv


def test_fetch_into_a_new_location_says_it_creates_a_cache(
    embedded_model_dir, tmp_path, monkeypatch, capsys
):
    # Guards: a fetch that will build a second cache says so and names the one it is not using.
    from codetune import cli

    monkeypatch.setenv("CODETUNE_HOME", str(tmp_path / "new"))
    monkeypatch.setattr(model_mod, "fetch_embedded", lambda force=False: model_mod.embedded_dir())
    assert cli.main(["model", "fetch"]) == 0
    err = capsys.readouterr().err
    assert f"creating a new cache at {tmp_path / 'new'} (chosen by CODETUNE_HOME)" in err
    assert str(embedded_model_dir.parents[1]) in err.split("not used:")[1]
