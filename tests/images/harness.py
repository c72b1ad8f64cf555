"""Build the images from their Dockerfiles and run jobs in them the way SageMaker does.

SageMaker starts a job's container as root (``docker run IMAGE train|prepare|evaluate|serve``)
with Docker's default seccomp profile and capability set, and bind-mounts its own
root-owned directories (``/opt/ml/processing/input/<name>``, ``/opt/ml/processing/output/<name>``,
``/opt/ml/model``, ``/opt/ml/output``, ``/opt/ml/checkpoints``, ``/opt/ml/input/...``). Here that
is rootful podman with runc, Docker's own ``profiles/seccomp/default.json`` (podman's default
profile is looser), ``--cap-add AUDIT_WRITE,MKNOD,NET_RAW`` (podman's default set lacks these
three of Docker's) and ``--network=none``. ``make setup`` (Makefile, ``containers``) installs
podman and makes the base image, the uv image and the wheelhouse the CPU build uses.

    python tests/images/harness.py build          # what `make images` runs
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "images"
SECCOMP = CACHE / "seccomp-docker-default.json"
WHEELHOUSE = CACHE / "wheelhouse"
# Docker's default capabilities that podman's default set lacks.
DOCKER_EXTRA_CAPS = "AUDIT_WRITE,MKNOD,NET_RAW"
BUILD_WHEELHOUSE = "/wheelhouse"
# More `podman run` options for every job, to see the tests fail under other conditions:
# "--user 1000:1000" is what the images' former `USER 1000:1000` did.
EXTRA_RUN_ARGS = shlex.split(os.environ.get("CODETUNE_IMAGE_RUN_ARGS", ""))
TEST_PYTHON = "/usr/bin/python3.11"  # Debian bookworm's, in the base image


def _make_var(name: str) -> str:
    m = re.search(rf"^{name} := (\S+)$", (REPO / "Makefile").read_text(), re.M)
    if not m:
        raise RuntimeError(f"Makefile defines no {name}")
    return m.group(1)


def uv_version() -> str:
    text = (REPO / "training_image" / "Dockerfile").read_text()
    return re.search(r"^ARG UV_IMAGE=\S+/uv:(\S+)$", text, re.M).group(1)


BASE_IMAGE = _make_var("TEST_BASE_IMAGE")
UV_IMAGE = f"localhost/codetune-uv:{uv_version()}"


@dataclass(frozen=True)
class ImageSpec:
    dockerfile: str
    tag: str

    @property
    def ignorefile(self) -> str:
        return f"{self.dockerfile}.dockerignore"


IMAGES = {
    "train": ImageSpec("training_image/Dockerfile", "localhost/codetune-train:test"),
    "serve": ImageSpec("inference_image/Dockerfile", "localhost/codetune-serve:test"),
}


def unavailable() -> str | None:
    """Why the image tests cannot run here (None: they can). Only a missing or unusable podman
    is a reason to skip; a missing base image, uv image or wheelhouse is a setup error."""
    if not shutil.which("podman"):
        return "podman is not installed (make setup installs it as root: Makefile, containers)"
    info = subprocess.run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], **_text())
    if info.returncode != 0:
        return f"podman does not work here: {info.stderr.strip()[-300:]}"
    return None


def check_setup() -> None:
    """Raise with what to run when make setup's container pieces are missing."""
    missing = [str(p) for p in (SECCOMP, WHEELHOUSE / ".installed") if not p.exists()]
    for image in (BASE_IMAGE, UV_IMAGE):
        if subprocess.run(["podman", "image", "exists", image]).returncode != 0:
            missing.append(f"image {image}")
    if missing:
        raise RuntimeError(f"missing {', '.join(missing)}: run `make setup` (as root)")


def _text() -> dict:
    return {"capture_output": True, "text": True}


def build_args(spec: ImageSpec, context: Path = REPO) -> list[str]:
    """The podman build command of the CPU test image (the Dockerfile's build arguments)."""
    return [
        "podman",
        "build",
        "--layers",
        "-f",
        str(context / spec.dockerfile),
        "--ignorefile",
        str(context / spec.ignorefile),
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
        "--build-arg",
        f"UV_IMAGE={UV_IMAGE}",
        "--build-arg",
        f"PYTHON={TEST_PYTHON}",
        "--build-arg",
        f"WHEELHOUSE={BUILD_WHEELHOUSE}",
        "--volume",
        f"{WHEELHOUSE}:{BUILD_WHEELHOUSE}:ro",
        "-t",
        spec.tag,
        str(context),
    ]


def build(kind: str, *, context: Path = REPO, tag: str | None = None, log: Path | None = None):
    """Build image ``kind`` ("train" or "serve"); returns (tag, seconds). Raises with the end
    of the build log on failure."""
    spec = IMAGES[kind]
    if tag:
        spec = ImageSpec(spec.dockerfile, tag)
    log = log or CACHE / f"build-{kind}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(log, "w") as fh:
        res = subprocess.run(build_args(spec, context), stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - t0
    if res.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"podman build of {spec.dockerfile} failed (log {log}):\n{tail}")
    return spec.tag, seconds


def sagemaker_dir(path: Path) -> Path:
    """A host directory as SageMaker provides one: owned by root, mode 0755."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, 0, 0)
    os.chmod(path, 0o755)
    return path


@dataclass
class Job:
    """One container run: image, command, SageMaker mounts and environment."""

    image: str
    args: list[str]
    entrypoint: str | None = None  # a Processing job's ContainerEntrypoint
    mounts: dict[str, Path] = field(default_factory=dict)  # container path -> host path
    read_only: set[str] = field(default_factory=set)
    env: dict[str, str] = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"codetune-test-{uuid.uuid4().hex[:10]}")
    detach: bool = False
    extra: list[str] = field(default_factory=list)  # more podman run options (tests only)

    def command(self) -> list[str]:
        cmd = ["podman", "run", "--name", self.name, "--network=none"]
        cmd += ["--security-opt", f"seccomp={SECCOMP}", "--cap-add", DOCKER_EXTRA_CAPS]
        cmd += ["--rm"] if not self.detach else ["-d"]
        if self.entrypoint:
            cmd += ["--entrypoint", self.entrypoint]
        for target, host in sorted(self.mounts.items()):
            ro = ":ro" if target in self.read_only else ""
            cmd += ["-v", f"{host}:{target}{ro}"]
        for k, v in sorted(self.env.items()):
            cmd += ["-e", f"{k}={v}"]
        return cmd + self.extra + EXTRA_RUN_ARGS + [self.image] + self.args

    def run(self, timeout: float) -> subprocess.CompletedProcess:
        """Run to completion (killed after ``timeout`` seconds). The container is removed
        whatever ends the wait (a timeout, pytest's own timeout, Ctrl-C): killing the podman
        client alone would leave it running."""
        try:
            return subprocess.run(self.command(), timeout=timeout, **_text())
        except subprocess.TimeoutExpired as e:
            raise AssertionError(
                f"{self.args} did not finish in {timeout:.0f} s:\n{e.stdout}\n{e.stderr}"
            ) from e
        finally:
            if not self.detach:
                remove(self.name)

    def start(self) -> None:
        res = subprocess.run(self.command(), **_text())
        if res.returncode != 0:
            raise AssertionError(f"podman run {self.args} failed: {res.stderr}")

    def exec(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["podman", "exec", self.name, *args], timeout=timeout, **_text())

    def http(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        content_type: str = "application/json",
        port: int = 8080,
        timeout: float = 300,
    ) -> tuple[int, bytes]:
        """An HTTP request to the container's own port, sent from inside it (the container
        has no network, only its loopback); returns (status, body), status 0 when nothing
        answers."""
        res = subprocess.run(
            ["podman", "exec", "-i", self.name, "python", "-c", HTTP_CLIENT, method,
             f"http://127.0.0.1:{port}{path}", content_type],
            input=body, capture_output=True, timeout=timeout,
        )  # fmt: skip
        if res.returncode != 0:
            raise AssertionError(f"podman exec failed: {res.stderr.decode(errors='replace')}")
        status, _, payload = res.stdout.partition(b"\n")
        return int(status), payload

    def logs(self) -> str:
        res = subprocess.run(["podman", "logs", self.name], **_text())
        return res.stdout + res.stderr

    def running(self) -> bool:
        res = subprocess.run(
            ["podman", "inspect", "--format", "{{.State.Running}}", self.name], **_text()
        )
        return res.stdout.strip() == "true"


# Run with `python -c` inside a container: METHOD URL CONTENT-TYPE, the body on stdin; prints
# the status (0: no answer), a newline, the body.
HTTP_CLIENT = """
import sys, urllib.error, urllib.request
method, url, ctype = sys.argv[1:4]
body = sys.stdin.buffer.read() if method != "GET" else None
req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": ctype})
try:
    with urllib.request.urlopen(req, timeout=280) as r:
        status, data = r.status, r.read()
except urllib.error.HTTPError as e:
    status, data = e.code, e.read()
except OSError as e:
    status, data = 0, str(e).encode()
sys.stdout.buffer.write(str(status).encode() + b"\\n" + data)
"""


def processing_resource_config() -> dict:
    """/opt/ml/config/resourceconfig.json of a one-instance Processing job."""
    return {"current_host": "algo-1", "hosts": ["algo-1"]}


def training_resource_config(instance_type: str, hosts: list[str]) -> dict:
    """/opt/ml/input/config/resourceconfig.json of a training job on its first host."""
    group = "homogeneousCluster"
    return {
        "current_host": hosts[0],
        "current_instance_type": instance_type,
        "current_group_name": group,
        "hosts": hosts,
        "instance_groups": [
            {"instance_group_name": group, "instance_type": instance_type, "hosts": hosts}
        ],
        "network_interface_name": "eth0",
    }


def model_archive(model_dir: Path, dest: Path) -> Path:
    """``model.tar.gz`` of ``model_dir``'s contents, as SageMaker packs /opt/ml/model."""
    import tarfile

    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        for p in sorted(model_dir.iterdir()):
            tar.add(p, arcname=p.name)
    return dest


def remove(name: str) -> None:
    subprocess.run(["podman", "rm", "-f", "-t", "0", name], **_text())


def image_size_mb(tag: str) -> float:
    res = subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", tag], **_text())
    return int(res.stdout.strip()) / 1e6


def main(argv: list[str]) -> int:
    if argv[:1] != ["build"]:
        print(__doc__)
        return 2
    reason = unavailable()
    if reason:
        print(f"images: {reason}", file=sys.stderr)
        return 1
    check_setup()
    timings = {}
    for kind in IMAGES:
        tag, seconds = build(kind)
        timings[tag] = {"seconds": round(seconds, 1), "size_mb": round(image_size_mb(tag))}
    print(json.dumps(timings, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
