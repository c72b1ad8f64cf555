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
