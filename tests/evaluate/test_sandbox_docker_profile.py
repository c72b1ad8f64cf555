"""The sandbox as root in a SageMaker container: Docker's default seccomp profile loaded, the
capability set cut to Docker's (no CAP_SYS_ADMIN). bubblewrap cannot create namespaces there
(defect 3); the seccomp filter and Landlock must install themselves on top of Docker's filter
and contain the hostile completions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROFILE = Path("/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json")
HERE = Path(__file__).parent
DOCKER_BOUNDING_SET = (
    "-all,+chown,+dac_override,+fsetid,+fowner,+mknod,+net_raw,+setgid,+setuid,+setfcap,"
    "+setpcap,+net_bind_service,+sys_chroot,+kill,+audit_write"
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="SageMaker runs containers as root"),
    pytest.mark.skipif(
        not PROFILE.is_file(),
        reason=f"Docker's default seccomp profile ({PROFILE}, Debian package "
        "golang-github-docker-docker-dev, installed by the image tier's setup) is missing",
    ),
]


def _as_container_root(*command: str, **kw) -> subprocess.CompletedProcess:
    argv = ["setpriv", f"--bounding-set={DOCKER_BOUNDING_SET}", "--inh-caps=-all", "--"]
    argv += [sys.executable, str(HERE / "docker_seccomp.py"), str(PROFILE), "--", *command]
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def test_bwrap_fails_there_and_the_unprivileged_layers_work():
    # Guards defect 3 on the host: under Docker's profile without CAP_SYS_ADMIN bubblewrap
    # fails exactly as in the container, and the default minimum is still met.
    r = _as_container_root(
        sys.executable,
        "-c",
        "from codetune.evaluate.sandbox import Sandbox, detect_layers\n"
        "print(detect_layers().reasons['bwrap'])\n"
        "box = Sandbox()\n"
        "print(box.describe()['layers'])\n"
        "print(box.run('assert 1 + 1 == 2\\n').status)\n",
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    bwrap_why, layers, status = r.stdout.strip().splitlines()
    assert "Creating new namespace failed: Operation not permitted" in bwrap_why
    assert layers.startswith("['seccomp'") and "bwrap" not in layers
    assert status == "pass"


@pytest.mark.slow
def test_hostile_completions_contained_under_docker_profile(repo_root):
    # Guards: every test of test_sandbox.py for the layer combinations without bubblewrap
    # (the hostile completions and their negative controls) passes inside the container's
    # restrictions, the sandbox's filters stacked on Docker's.
    r = _as_container_root(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(repo_root / "tests/evaluate/test_sandbox.py"),
        "-k",
        "not bwrap",
        cwd=repo_root,
        timeout=600,
    )
    tail = r.stdout[-3000:]
    assert r.returncode == 0, tail + r.stderr[-2000:]
    assert " passed" in tail and "failed" not in tail and "error" not in tail
