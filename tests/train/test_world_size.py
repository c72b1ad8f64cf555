"""How many training processes the image's ``train`` starts, decided from what SageMaker gives
every training container: ``/opt/ml/input/config/resourceconfig.json`` and the GPUs torch sees.
No GPU and no training here: ``os.execve`` (the torchrun re-launch) and the in-process training
are replaced by recorders, so each test sees which of the two ``main()`` chose and with what."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from codetune.train import sagemaker


class Relaunched(Exception):
    """Raised by the fake ``os.execve`` so ``main()`` stops where it would have exec'd."""


@pytest.fixture
def job(tmp_path, monkeypatch):
    """A SageMaker root and a way to run ``main()`` as host H with G GPUs visible."""
    root = tmp_path / "opt_ml"
    (root / "input" / "config").mkdir(parents=True)
    monkeypatch.setenv("CODETUNE_SM_ROOT", str(root))
    for var in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "CODETUNE_MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    for var in ("SM_HOSTS", "SM_CURRENT_HOST", "SM_NUM_GPUS"):  # not in our image
        monkeypatch.delenv(var, raising=False)
    seen: dict = {}

    def fake_execve(path, argv, env):
        seen.update(argv=list(argv), env=dict(env))
        raise Relaunched

    def fake_train(paths):
        seen["in_process"] = True
        return 0

    monkeypatch.setattr(sagemaker.os, "execve", fake_execve)
    monkeypatch.setattr(sagemaker, "_train", fake_train)

    def run(resourceconfig: dict | str | None, gpus: int) -> dict:
        seen.clear()
        path = root / "input" / "config" / "resourceconfig.json"
        if resourceconfig is None:
            path.unlink(missing_ok=True)
        else:
            text = resourceconfig if isinstance(resourceconfig, str) else json.dumps(resourceconfig)
            path.write_text(text)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        try:
            seen["rc"] = sagemaker.main()
        except Relaunched:
            pass
        return dict(seen)

    return run


def _rc(host: str, hosts: list[str]) -> dict:
    # The shape SageMaker writes (plus current_group etc., which codetune does not read).
    return {
        "current_host": host,
        "current_instance_type": "ml.g5.12xlarge",
        "hosts": hosts,
        "network_interface_name": "eth0",
    }


def _flag(argv: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    assert len(values) == 1, (name, argv)
    return values[0]


def test_two_hosts_two_gpus_is_one_torchrun_of_four_processes(job):
    # 2 instances x 2 GPUs: each host re-execs the same entrypoint under torchrun with its own
    # node rank, the same master (first host) and port, and 2 processes per node = 4 in all.
    hosts = ["algo-2", "algo-1"]  # order in the file must not matter: ranks follow sorted hosts
    plans = {h: job(_rc(h, hosts), gpus=2) for h in ("algo-1", "algo-2")}
    for host, plan in plans.items():
        argv = plan.get("argv")
        assert argv is not None and "in_process" not in plan, f"{host} did not launch torchrun"
        assert argv[:3] == [sys.executable, "-m", "torch.distributed.run"]
        assert argv[-2:] == ["-m", "codetune.train.sagemaker"]  # the same train entrypoint
        assert _flag(argv, "nnodes") == "2" and _flag(argv, "nproc-per-node") == "2"
        assert _flag(argv, "master-addr") == "algo-1"
        assert _flag(argv, "master-port") == sagemaker.MASTER_PORT
        # NCCL/gloo talk over the interface SageMaker names, not whatever they guess.
        assert plan["env"]["NCCL_SOCKET_IFNAME"] == "eth0"
        assert plan["env"]["GLOO_SOCKET_IFNAME"] == "eth0"
    assert _flag(plans["algo-1"]["argv"], "node-rank") == "0"
    assert _flag(plans["algo-2"]["argv"], "node-rank") == "1"
    total = sum(int(_flag(p["argv"], "nproc-per-node")) for p in plans.values())
    assert total == 4


def test_one_host_one_gpu_trains_in_place(job):
    # The common case: no torchrun, no extra process, training in this process.
    plan = job(_rc("algo-1", ["algo-1"]), gpus=1)
    assert plan == {"in_process": True, "rc": 0}


def test_one_host_four_gpus_is_torchrun_on_loopback(job):
    # One instance with 4 GPUs: 4 local processes, master on loopback.
    argv = job(_rc("algo-1", ["algo-1"]), gpus=4)["argv"]
    assert _flag(argv, "nnodes") == "1" and _flag(argv, "nproc-per-node") == "4"
    assert _flag(argv, "node-rank") == "0" and _flag(argv, "master-addr") == "127.0.0.1"


def test_cpu_only_host_trains_in_place(job):
    # No GPU visible: one process, not torchrun with zero workers.
    assert job(_rc("algo-1", ["algo-1"]), gpus=0) == {"in_process": True, "rc": 0}


def test_two_cpu_hosts_are_one_process_each(job):
    # CPU instances x 2: one process per host, still one job (not two independent copies).
    argv = job(_rc("algo-2", ["algo-1", "algo-2"]), gpus=0)["argv"]
    assert _flag(argv, "nnodes") == "2" and _flag(argv, "nproc-per-node") == "1"
    assert _flag(argv, "node-rank") == "1"


def test_without_resourceconfig_is_one_host(job):
    # A local run (no SageMaker) is one host; its GPUs still decide the process count.
    assert job(None, gpus=1) == {"in_process": True, "rc": 0}
    assert _flag(job(None, gpus=2)["argv"], "nproc-per-node") == "2"


def test_under_torchrun_trains_in_place(job, monkeypatch):
    # A process torchrun started must train, not launch torchrun again.
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert job(_rc("algo-1", ["algo-1", "algo-2"]), gpus=2) == {"in_process": True, "rc": 0}


@pytest.mark.parametrize(
    "text, says",
    [
        ("{not json", "not valid JSON"),
        ('["algo-1"]', "a JSON object"),
        ('{"hosts": ["algo-1"]}', "current_host"),
        ('{"current_host": "algo-1", "hosts": []}', "hosts"),
        ('{"current_host": "algo-1", "hosts": "algo-1"}', "hosts"),
        ('{"current_host": "algo-1", "hosts": ["algo-1", "algo-1"]}', "twice"),
        ('{"current_host": "algo-3", "hosts": ["algo-1", "algo-2"]}', "algo-3"),
        ('{"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": 7}', "network"),
    ],
)
def test_malformed_resourceconfig_fails_clearly(job, capsys, text, says):
    # A broken resourceconfig.json is an error that names the file and the problem, exits 2,
    # and becomes the job's FailureReason; nothing trains and nothing is launched.
    plan = job(text, gpus=2)
    assert plan == {"rc": 2}
    err = capsys.readouterr().err
    assert "resourceconfig.json" in err and says in err, err
    failure = sagemaker.SageMakerPaths.from_env().failure_file.read_text()
    assert says in failure
