"""Fast checks without a model: configuration, model-directory layouts, CLI arguments."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from codetune.errors import CodetuneError, ConfigError
from codetune.serve.config import ServeConfig, bind_port
from codetune.serve.loading import discover_adapters, is_full_model, local_source


def _adapter(d):
    d.mkdir(parents=True, exist_ok=True)
    (d / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x"}))
    return d


def test_model_dir_layouts(tmp_path):
    # Guards: the SageMaker model dir is read in each documented layout.
    multi = tmp_path / "multi"
    _adapter(multi / "adapters" / "sql")
    _adapter(multi / "adapters" / "py")
    assert sorted(discover_adapters(multi)) == ["py", "sql"]
    single = _adapter(tmp_path / "single")
    assert discover_adapters(single, "mine") == {"mine": str(single)}
    packed = tmp_path / "packed"
    packed.mkdir()
    src = _adapter(tmp_path / "src")
    with tarfile.open(packed / "model.tar.gz", "w:gz") as tar:
        tar.add(src / "adapter_config.json", arcname="adapter_config.json")
    found = discover_adapters(packed)
    assert list(found) == ["adapter"]
    assert (tmp_path / found["adapter"] / "adapter_config.json").is_file()
    assert discover_adapters(tmp_path / "missing") == {}


def test_non_adapter_under_adapters_dir_is_an_error(tmp_path):
    # Guards: a half-copied adapter is reported, not silently skipped.
    (tmp_path / "adapters" / "broken").mkdir(parents=True)
    with pytest.raises(CodetuneError, match="adapter_config.json"):
        discover_adapters(tmp_path)


def test_full_model_dir_is_a_base_model(tmp_path):
    # Guards: a model dir holding a full checkpoint is served as the base model.
    (tmp_path / "config.json").write_text("{}")
    assert is_full_model(tmp_path)
    _adapter(tmp_path)
    assert not is_full_model(tmp_path)


def test_local_source_rejects_unknown(tmp_path):
    # Guards: a bad adapter source is a user error naming it.
    with pytest.raises(CodetuneError, match="not a directory"):
        local_source(str(tmp_path / "nope"))


def test_config_from_env_and_validation(monkeypatch):
    # Guards: the image's environment variables configure the server; bad values name the option.
    monkeypatch.setenv("CODETUNE_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "9090")
    cfg = ServeConfig.from_env(max_new_tokens_cap=64)
    assert cfg.max_batch_size == 4 and cfg.default_max_new_tokens == 64
    assert bind_port() == 9090 and bind_port(7000) == 7000
    with pytest.raises(ConfigError, match="queue_size"):
        ServeConfig.from_env(queue_size=0)
    with pytest.raises(ConfigError, match="known keys"):
        ServeConfig.from_env(max_batch=3)
    monkeypatch.setenv("CODETUNE_QUEUE_SIZE", "many")
    with pytest.raises(ConfigError, match="CODETUNE_QUEUE_SIZE"):
        ServeConfig.from_env()


def test_dtype_auto_is_bf16_only_where_the_hardware_multiplies_it(monkeypatch):
    # Guards: the CPU engine serves bf16 only on CPUs with AMX/AVX512-BF16 (elsewhere bf16 is
    # emulated and slower than fp32); the setting is validated and read from the image's env.
    from pathlib import Path

    import torch

    from codetune import generation

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = set(cpuinfo.read_text().split())
        assert generation.cpu_has_native_bf16() == bool({"amx_bf16", "avx512_bf16"} & flags)
    monkeypatch.setenv("CODETUNE_DTYPE", "bfloat16")
    assert ServeConfig.from_env().dtype == "bfloat16"
    with pytest.raises(ConfigError, match="dtype must be one of auto, float32, bfloat16"):
        ServeConfig.from_env(dtype="fp16")
    monkeypatch.setattr(generation, "cpu_has_native_bf16", lambda: True)
    assert generation.resolve_dtype("auto", cuda=False) is torch.bfloat16
    monkeypatch.setattr(generation, "cpu_has_native_bf16", lambda: False)
    assert generation.resolve_dtype("auto", cuda=False) is torch.float32
    assert generation.resolve_dtype("bfloat16", cuda=False) is torch.bfloat16
    with pytest.raises(CodetuneError, match="dtype must be one of"):
        generation.resolve_dtype("half", cuda=False)


def test_cli_builds_config_from_flags(tmp_path):
    # Guards: --adapter DIR and NAME=DIR, --set overrides, and duplicate names rejected.
    from codetune.cli import build_parser
    from codetune.serve.cli import build_config

    a, b = _adapter(tmp_path / "alpha"), _adapter(tmp_path / "beta")
    args = build_parser().parse_args(
        ["serve", "--adapter", str(a), "--adapter", f"b2={b}", "--set", "max_batch_size=2"]
    )
    cfg = build_config(args)
    assert cfg.adapters == {"alpha": str(a), "b2": str(b)} and cfg.max_batch_size == 2
    dup = build_parser().parse_args(["serve", "--adapter", str(a), "--adapter", f"alpha={b}"])
    with pytest.raises(CodetuneError, match="two adapters"):
        build_config(dup)


def test_sse_parser_handles_events_split_anywhere():
    # Guards: SageMaker PayloadParts may cut an event at any byte; parsing must not care.
    from codetune.serve.invoke_cli import iter_sse, text_of_event

    events = [
        {"choices": [{"delta": {"content": "héllo"}}]},
        {"choices": [{"delta": {"content": " world"}}]},
    ]
    stream = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"
    for size in (1, 3, 7, len(stream)):
        parts = [stream[i : i + size] for i in range(0, len(stream), size)]
        parsed = list(iter_sse(parts))
        assert parsed[-1] == "[DONE]"
        assert "".join(text_of_event(e) for e in parsed) == "héllo world"


def test_invoke_sagemaker_sends_signed_invoke_endpoint(capsys):
    # Guards: `codetune invoke --endpoint` calls InvokeEndpoint with a JSON body naming the
    # adapter, and prints the generated text (botocore's Stubber checks the parameters).
    import boto3
    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    from codetune.cli import build_parser
    from codetune.serve import invoke_cli

    client = boto3.client(
        "sagemaker-runtime",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    answer = json.dumps([{"generated_text": "return a + b"}]).encode()
    body = {"inputs": "def add(a, b):", "parameters": {"max_new_tokens": 8, "adapter_id": "py"}}
    with Stubber(client) as stub:
        stub.add_response(
            "invoke_endpoint",
            {"Body": StreamingBody(io.BytesIO(answer), len(answer))},
            {
                "EndpointName": "ep",
                "ContentType": "application/json",
                "Accept": "application/json",
                "Body": json.dumps(body).encode(),
            },
        )
        args = build_parser().parse_args(
            ["invoke", "--endpoint", "ep", "--prompt", "def add(a, b):"]
            + ["--adapter", "py", "--max-new-tokens", "8"]
        )
        assert invoke_cli.run(args, client=client) == 0
        stub.assert_no_pending_responses()
    assert capsys.readouterr().out == "return a + b\n"


def test_dockerfile_follows_the_hosting_contract_and_lints_clean(repo_root):
    # Guards: the image runs `serve` as root (SageMaker's contract: no USER its mounts would
    # defeat), declares the SageMaker port label, installs pinned dependencies, takes its base
    # image as a build argument (one file for the CUDA and the CPU test image), and passes
    # hadolint (installed by `make setup`, dev extra). tests/images builds and runs it.
    import re
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    dockerfile = repo_root / "inference_image" / "Dockerfile"
    text = dockerfile.read_text()
    assert "accept-bind-to-port=true" in text
    assert 'CMD ["serve"]' in text and not re.search(r"^USER ", text, re.M)
    assert '-c "/tmp/${pins}"' in text and "constraints-vllm.txt" in text  # pinned versions
    assert "ARG ENGINE=transformers" in text
    assert "ARG BASE_IMAGE=nvidia/cuda:" in text
    ignore = (repo_root / "inference_image" / "Dockerfile.dockerignore").read_text()
    assert "!src/" in ignore and "!schemas/" in ignore
    assert ignore.lstrip().splitlines()[3] == "**"
    assert "!inference_image/constraints-vllm.txt" in ignore
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint missing: run make setup (dev extra)"
    for path in (dockerfile, repo_root / "training_image" / "Dockerfile"):
        res = subprocess.run([hadolint, str(path)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr


def test_fetch_s3_prefix_and_archive(tmp_path, monkeypatch):
    # Guards: adapters/base models given as s3:// (a prefix or a model.tar.gz) are downloaded
    # to a local directory (moto: no AWS account, no network).
    import boto3
    from moto import mock_aws

    from codetune.serve.loading import fetch_s3

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    src = _adapter(tmp_path / "src")
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "adapter_config.json", arcname="adapter_config.json")
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="ct-bucket")
        s3.upload_file(
            str(src / "adapter_config.json"), "ct-bucket", "runs/r1/adapter/adapter_config.json"
        )
        s3.upload_file(str(archive), "ct-bucket", "runs/r1/output/model.tar.gz")
        d = fetch_s3("s3://ct-bucket/runs/r1/adapter", cache_root=tmp_path / "c1")
        assert (tmp_path / d / "adapter_config.json").is_file()
        d = fetch_s3("s3://ct-bucket/runs/r1/output/model.tar.gz", cache_root=tmp_path / "c2")
        assert discover_adapters(d) == {"adapter": d}
        with pytest.raises(CodetuneError, match="nothing found"):
            fetch_s3("s3://ct-bucket/runs/missing", cache_root=tmp_path / "c3")


# --- engine choice and vLLM settings (pure functions; no vLLM, no GPU needed) -------------


def _facts(**kw):
    from codetune.serve.vllm_args import ModelFacts

    base = dict(
        params=1_540_000_000,
        layers=28,
        attention_heads=12,
        kv_heads=2,
        head_dim=128,
        context_window=32768,
    )
    return ModelFacts(**{**base, **kw})


def test_engine_choice_defaults_to_transformers_without_vllm():
    # Guards: `auto` serves with the transformers engine where vLLM is absent (this venv, the
    # CPU image); asking for vllm there is a start-up error naming what to change.
    from codetune.serve.engine import choose_engine

    assert choose_engine("auto") == "transformers"
    with pytest.raises(ConfigError, match="vLLM is not installed"):
        choose_engine("vllm")
    with pytest.raises(ConfigError, match="engine must be one of"):
        ServeConfig.from_env(engine="tgi")


def test_vllm_args_follow_the_instance_and_the_adapters():
    # Guards: the knobs derived for a GPU instance: tensor parallel = its GPU count, bf16 on
    # A10G, fp16 on T4, LoRA rank slot from the adapters' r (and never below the training
    # default, so later adapters fit), at least 4 LoRA slots.
    from codetune.serve.vllm_args import engine_args, gpus_for_instance

    cfg = ServeConfig.from_env()
    a = engine_args(cfg, _facts(), [64, 8], gpus_for_instance("ml.g5.12xlarge"))
    assert a["tensor_parallel_size"] == 4 and a["dtype"] == "bfloat16"
    assert a["max_lora_rank"] == 64 and a["max_loras"] == 4
    assert a["gpu_memory_utilization"] == 0.9 and a["max_model_len"] == 32768
    assert engine_args(cfg, _facts(), [20], None)["max_lora_rank"] == 32
    assert engine_args(cfg, _facts(), [], None)["max_lora_rank"] == 16
    t4 = engine_args(cfg, _facts(), [], gpus_for_instance("ml.g4dn.xlarge"))
    assert t4["dtype"] == "float16" and t4["tensor_parallel_size"] == 1
    assert gpus_for_instance("ml.m5.xlarge") is None
    with pytest.raises(ConfigError, match="unknown to codetune"):
        gpus_for_instance("ml.g7.xlarge")


def test_vllm_args_fit_the_gpu_memory_and_honour_overrides():
    # Guards: max_model_len shrinks to what the KV cache can hold beside the weights (vLLM
    # refuses to start otherwise), tensor parallel drops to a divisor of the heads, weights
    # that cannot fit and impossible overrides fail at start-up naming the option, and
    # explicit settings win over derived ones.
    from codetune.serve.vllm_args import Gpus, engine_args

    cfg = ServeConfig.from_env()
    big = _facts(params=7_000_000_000, layers=32, kv_heads=32, attention_heads=32)
    a = engine_args(cfg, big, [], Gpus(1, 24, True, "A10G"))
    assert a["max_model_len"] % 256 == 0 and 1024 < a["max_model_len"] < 32768
    assert (
        engine_args(cfg, _facts(attention_heads=14), [], Gpus(4, 24, True))["tensor_parallel_size"]
        == 2
    )
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        engine_args(cfg, _facts(params=30_000_000_000), [], Gpus(1, 24, True, "A10G"))
    with pytest.raises(ConfigError, match="tensor_parallel_size=5"):
        engine_args(ServeConfig.from_env(tensor_parallel_size=5), _facts(), [], None)
    with pytest.raises(ConfigError, match="max_lora_rank"):
        engine_args(ServeConfig.from_env(max_lora_rank=16), _facts(), [32], None)
    with pytest.raises(ConfigError, match="quantization"):
        engine_args(ServeConfig.from_env(quantization="4bit"), _facts(), [], None)
    over = ServeConfig.from_env(
        max_loras=2,
        max_lora_rank=128,
        gpu_memory_utilization=0.5,
        max_model_len=4096,
        tensor_parallel_size=2,
        max_batch_size=32,
        vllm_dtype="float16",
    )
    a = engine_args(over, _facts(), [8], Gpus(4, 80, True))
    assert (a["max_loras"], a["max_lora_rank"], a["gpu_memory_utilization"]) == (2, 128, 0.5)
    assert (a["max_model_len"], a["tensor_parallel_size"], a["max_num_seqs"]) == (4096, 2, 32)
    assert a["dtype"] == "float16"
    kv = engine_args(ServeConfig.from_env(vllm_kv_cache_bytes=128 * 2**20), _facts(), [], None)
    assert "gpu_memory_utilization" not in kv and kv["max_model_len"] == 2304  # 2340 tokens fit
    with pytest.raises(ConfigError, match="holds 18 tokens"):
        engine_args(ServeConfig.from_env(vllm_kv_cache_bytes=2**20), _facts(), [], None)


def test_model_facts_and_adapter_rank_are_read_from_the_files(embedded_model_dir, tmp_path):
    # Guards: the derivation's inputs come from the model's config.json and safetensors
    # headers (no weights loaded) and the adapter's r / rank_pattern.
    from codetune.serve.vllm_args import adapter_rank, model_facts

    f = model_facts(embedded_model_dir)
    assert (f.layers, f.attention_heads, f.kv_heads, f.head_dim) == (30, 9, 3, 64)
    assert 130e6 < f.params < 140e6 and f.context_window == 8192
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "rank_pattern": {"q": 24}}))
    assert adapter_rank(tmp_path) == 24
    with pytest.raises(ConfigError, match="config.json"):
        model_facts(tmp_path)
