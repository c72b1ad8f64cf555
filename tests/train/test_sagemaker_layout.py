"""The image's ``train`` command under a temporary SageMaker root, as separate processes:
the layout contract, SIGKILL + restart resuming to exactly max_steps, and two hosts from
resourceconfig.json training as one torchrun job on CPU (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_fixtures import TINY, write_dataset

from codetune.metrics import parse_metrics
from codetune.train import checkpoints as ckpts
from codetune.train.hyperparameters import to_hyperparameters

pytestmark = pytest.mark.slow


def sm_root(tmp_path: Path, overrides: list[str], name: str = "opt_ml") -> Path:
    """A SageMaker layout: hyperparameters.json + train/validation channels."""
    root = tmp_path / name
    data = write_dataset(tmp_path / f"prepared-{name}", n_train=2, n_val=2)
    for ch in ("train", "validation"):
        d = root / "input" / "data" / ch
        d.mkdir(parents=True)
        name = f"{ch}.jsonl"
        (d / name).write_text((data / name).read_text())
    hp = dict(kv.split("=", 1) for kv in TINY + overrides)
    hp = {k: json.loads(v) if v[:1].isdigit() else v for k, v in hp.items()}
    cfg = root / "input" / "config"
    cfg.mkdir(parents=True)
    (cfg / "hyperparameters.json").write_text(json.dumps(to_hyperparameters("cpu-smollm2", hp)))
    return root


def train_proc(root: Path, **env) -> subprocess.Popen:
    full = dict(os.environ, CODETUNE_SM_ROOT=str(root), PYTHONUNBUFFERED="1")
    full.setdefault("CODETUNE_TORCH_THREADS", "1")  # shared CPU: see train_fixtures
    full.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "codetune.train.sagemaker"],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def steps_logged(stdout: str) -> list[int]:
    return [int(m["step"]) for m in map(parse_metrics, stdout.splitlines()) if m and "loss" in m]


def test_sigkill_then_restart_finishes_exactly_max_steps(tmp_path):
    # SageMaker layout in, adapter out; a SIGKILLed run restarted resumes from the newest valid
    # checkpoint (a torn one is ignored) and stops at exactly max_steps optimizer steps.
    root = sm_root(tmp_path, ["max_steps=3", "save_steps=1"])
    ck = root / "checkpoints"
    p = train_proc(root)
    deadline = time.time() + 400
    while ckpts.newest_valid(ck) is None:
        assert p.poll() is None, p.stdout.read()
        assert time.time() < deadline, "no checkpoint within the deadline"
        time.sleep(0.5)
    p.send_signal(signal.SIGKILL)
    first_out = p.communicate()[0]
    assert p.returncode == -signal.SIGKILL
    assert not (root / "model" / "adapter_config.json").exists()  # nothing published yet
    done = ckpts.checkpoint_step(ckpts.newest_valid(ck))
    torn = ck / "checkpoint-99"  # a checkpoint killed mid-write: no marker
    torn.mkdir()
    (torn / "trainer_state.json").write_text('{"global_step": 99}')

    p2 = train_proc(root)
    out = p2.communicate(timeout=600)[0]
    assert p2.returncode == 0, out
    summary = json.loads((root / "model" / "training_summary.json").read_text())
    assert summary["steps"] == 3
    assert summary["resumed_from_step"] == done
    assert steps_logged(out) == list(range(done + 1, 4)), (steps_logged(first_out), out[-2000:])
    for name in ("adapter_config.json", "adapter_model.safetensors", "loss_curve.png"):
        assert (root / "model" / name).is_file()
    assert not torn.exists()


def test_two_hosts_from_resourceconfig_train_as_one_torchrun_job(tmp_path):
    # Two "hosts" on loopback, each with its own SageMaker root and a resourceconfig.json as
    # SageMaker writes it, no GPU: each re-execs under torchrun with its node rank, the two
    # form one DDP job over gloo (world size 2), and rank 0's host alone publishes the adapter.
    hosts = ["127.0.0.1", "127.0.0.2"]  # sorted: the first is the master
    over = ["max_steps=1", "per_device_batch_size=1", "eval_max_examples=1"]
    port = str(_free_port())
    procs = {}
    for host in reversed(hosts):  # start the non-master first: order must not matter
        root = sm_root(tmp_path, over, name=f"opt_ml-{host}")
        (root / "input" / "config" / "resourceconfig.json").write_text(
            json.dumps({"current_host": host, "hosts": hosts, "network_interface_name": "lo"})
        )
        procs[host] = (root, train_proc(root, CODETUNE_MASTER_PORT=port, OMP_NUM_THREADS="1"))
    outs = {h: p.communicate(timeout=600)[0] for h, (_, p) in procs.items()}
    for host, (_, p) in procs.items():
        assert p.returncode == 0, (host, outs[host][-3000:])
    assert "--nnodes=2" in outs["127.0.0.1"] and "--node-rank=0" in outs["127.0.0.1"]
    assert "--node-rank=1" in outs["127.0.0.2"]
    master, other = procs["127.0.0.1"][0] / "model", procs["127.0.0.2"][0] / "model"
    summary = json.loads((master / "training_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 1
    assert (master / "adapter_model.safetensors").is_file()
    assert not (other / "adapter_model.safetensors").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_hyperparameters_fail_with_failure_file(tmp_path):
    # A bad override in hyperparameters.json fails at start-up, names the key, writes
    # /opt/ml/output/failure (SageMaker's FailureReason) and publishes nothing.
    root = sm_root(tmp_path, ["lora.rnak=4"])
    p = train_proc(root)
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 2, out
    assert "rnak" in (root / "output" / "failure").read_text()
    assert not (root / "model").exists() or not any((root / "model").iterdir())


def test_sigterm_saves_a_checkpoint_and_publishes_nothing(tmp_path):
    # Spot's two-minute warning: SIGTERM mid-training saves a valid checkpoint at the current
    # step (save_steps would not have), exits 143 and leaves no adapter in the model dir.
    root = sm_root(tmp_path, ["max_steps=50", "save_steps=100"])
    p = train_proc(root)
    seen = []
    for line in p.stdout:
        seen.append(line)
        m = parse_metrics(line.strip())
        if m and "loss" in m:
            p.send_signal(signal.SIGTERM)
            break
    rest = p.communicate(timeout=300)[0]
    assert p.returncode == 143, "".join(seen)[-2000:] + rest[-2000:]
    valid = ckpts.newest_valid(root / "checkpoints")
    assert valid is not None and 1 <= ckpts.checkpoint_step(valid) < 50
    assert not (root / "model" / "adapter_config.json").exists()
