"""The server refuses to start on an accelerator instance type whose accelerator it cannot use,
instead of loading fp32 on the CPU and answering at GPU prices. This machine has no GPU, so the
CUDA probe below is the real one: it finds no CUDA."""

from __future__ import annotations

import json

import pytest

from codetune.serve import cli as serve_cli
from codetune.serve import runner


@pytest.fixture
def serve(tmp_path, monkeypatch):
    """Run the image's ``serve`` command up to the point where the server would come up."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x"}))
    came_up = []
    monkeypatch.setattr(runner, "run_foreground", lambda config, host, port: came_up.append(1))
    monkeypatch.delenv("CODETUNE_INSTANCE_TYPE", raising=False)

    def run(instance_type: str | None) -> tuple[int, bool]:
        came_up.clear()
        if instance_type:
            monkeypatch.setenv("CODETUNE_INSTANCE_TYPE", instance_type)
        else:
            monkeypatch.delenv("CODETUNE_INSTANCE_TYPE", raising=False)
        rc = serve_cli.serve_main(["--adapter", str(adapter), "--port", "8080"])
        return rc, bool(came_up)

    return run


@pytest.mark.parametrize("instance_type", ["ml.g5.xlarge", "ml.p4d.24xlarge", "ml.inf2.xlarge"])
def test_accelerator_instance_without_it_refuses_to_serve(serve, capsys, instance_type):
    # The endpoint must not come up (InService) on the CPU of an accelerator instance: exit 2,
    # and the message names the instance type and what was found.
    rc, came_up = serve(instance_type)
    assert not came_up, f"serve came up on {instance_type} without its accelerator"
    err = capsys.readouterr().err
    assert rc == 2 and instance_type in err, err
    assert ("CUDA" in err and "device_count() = 0" in err) or "Neuron" in err, err


@pytest.mark.parametrize("instance_type", [None, "ml.m5.xlarge", "ml.c7g.2xlarge"])
def test_cpu_instance_or_none_serves_on_cpu(serve, instance_type):
    # CPU families (and local runs without an instance type) serve on the CPU as before.
    assert serve(instance_type) == (0, True)


def test_gpu_instance_with_cuda_serves(serve, monkeypatch):
    # With CUDA usable the check stays out of the way.
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert serve("ml.g5.xlarge") == (0, True)


def test_driver_too_old_is_reported(monkeypatch):
    # The reason torch gives (a warning from is_available) is in the message.
    import warnings

    import torch

    from codetune.serve.accelerator import AcceleratorMissing, require_accelerator

    def old_driver():
        warnings.warn(
            "CUDA initialization: The NVIDIA driver on your system is too old", stacklevel=1
        )
        return False

    monkeypatch.setattr(torch.cuda, "is_available", old_driver)
    with pytest.raises(AcceleratorMissing, match="driver on your system is too old") as e:
        require_accelerator("ml.g6.2xlarge")
    assert "ml.g6.2xlarge" in str(e.value) and "InferenceAmiVersion" in str(e.value)


def test_families():
    # Which instance types promise which accelerator.
    from codetune.serve.accelerator import accelerator_for

    assert [accelerator_for(t) for t in ("ml.g4dn.xlarge", "ml.p5.48xlarge", "ml.g6e.xlarge")] == [
        "cuda"
    ] * 3
    assert [accelerator_for(t) for t in ("ml.inf2.xlarge", "ml.trn1.2xlarge")] == ["neuron"] * 2
    assert [accelerator_for(t) for t in ("ml.m5.large", "ml.c7g.xlarge", "", None)] == [None] * 4
