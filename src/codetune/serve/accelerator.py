"""Refusing to serve on the CPU of an accelerator instance.

Without a usable CUDA (a driver older than the image's CUDA build, a CPU-only torch, no
device visible) ``generation.load_model`` loads the model in fp32 on the CPU and the endpoint
still goes InService, answering slowly at GPU prices. On an instance type that promises an
accelerator, :func:`require_accelerator` makes the server fail at start-up instead, saying
what it found. The instance type comes from ``CODETUNE_INSTANCE_TYPE`` (the deployment sets
it in the container environment; SageMaker itself does not tell a hosting container).
"""

from __future__ import annotations

import os
import warnings

from codetune.errors import CodetuneError

# NVIDIA GPU families (ml.g4dn, g5, g6, g6e, p3, p4d, p5, ...) and AWS Neuron ones.
CUDA_FAMILY_PREFIXES = ("g", "p")
NEURON_FAMILY_PREFIXES = ("inf", "trn")
# What a GPU endpoint needs on AWS (codetune.workflow.deploy sets it for GPU families).
GPU_AMI_HINT = (
    "on SageMaker the endpoint config needs InferenceAmiVersion "
    "al2023-ami-sagemaker-inference-gpu-4-1 (NVIDIA driver 580) and the CUDA build of the "
    "inference image"
)


class AcceleratorMissing(CodetuneError):
    """The instance type promises an accelerator this process cannot use."""


def accelerator_for(instance_type: str | None) -> str | None:
    """``"cuda"``, ``"neuron"`` or None (a CPU family, or no instance type given)."""
    parts = (instance_type or "").split(".")
    family = parts[1] if len(parts) >= 3 and parts[0] == "ml" else ""
    if family.startswith(NEURON_FAMILY_PREFIXES):
        return "neuron"
    if family.startswith(CUDA_FAMILY_PREFIXES):
        return "cuda"
    return None


def cuda_found() -> tuple[bool, str]:
    """Whether CUDA is usable here, and a sentence saying what was found."""
    import torch

    with warnings.catch_warnings(record=True) as caught:
        # torch reports why CUDA failed to initialise (e.g. "The NVIDIA driver on your system
        # is too old") only as a warning from is_available().
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
        count = torch.cuda.device_count() if available else 0
    if available and count > 0:
        return True, f"{count} CUDA device(s)"
    build = torch.version.cuda
    found = [
        f"torch {torch.__version__} "
        + (f"built for CUDA {build}" if build else "built without CUDA (a CPU-only wheel)"),
        f"torch.cuda.is_available() = {available}, device_count() = {count}",
    ]
    reasons = [str(w.message) for w in caught if "CUDA" in str(w.message)]
    if reasons:
        found.append(f"CUDA initialisation said: {reasons[-1].strip()}")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        found.append(f"CUDA_VISIBLE_DEVICES={visible!r}")
    return False, "; ".join(found)


def require_accelerator(instance_type: str | None, probe=cuda_found) -> None:
    """Return when ``instance_type`` needs no accelerator or its accelerator is usable.

    ``probe() -> (usable, found)`` checks CUDA (tests replace it). Raises AcceleratorMissing
    (exit status 2) naming the instance type and what was found.
    """
    kind = accelerator_for(instance_type)
    if kind is None:
        return
    if kind == "neuron":
        raise AcceleratorMissing(
            f"instance type {instance_type} is an AWS Neuron (Inferentia/Trainium) instance, but "
            "codetune's serving engines (transformers, vLLM) run on CUDA GPUs or the CPU only; "
            "serving here would run on the CPU. Deploy on a GPU family (e.g. ml.g5.xlarge) or a "
            "CPU one (e.g. ml.m5.xlarge)"
        )
    usable, found = probe()
    if not usable:
        raise AcceleratorMissing(
            f"instance type {instance_type} is a GPU instance, but CUDA is not usable in this "
            f"container: {found}. Refusing to serve on the CPU in fp32 instead; {GPU_AMI_HINT}. "
            "Outside SageMaker, unset CODETUNE_INSTANCE_TYPE (or set a CPU instance type)"
        )
