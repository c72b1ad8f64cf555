"""The sandbox: hostile programs are contained and scored as failures; only completed tests pass."""

from __future__ import annotations

import os
import time

import pytest

from codetune.evaluate.sandbox import Limits, Sandbox, detect_isolation

CHECK_OK = "def f(x):\n    return x + 1\n\ndef check(c):\n    assert c(1) == 2\n\ncheck(f)\n"


@pytest.fixture(scope="module")
def sandbox():
    if detect_isolation() is None:
        # Not a skip: a green run without isolation would hide that nothing was tested.
        pytest.fail("no OS isolation here: bubblewrap missing or blocked (run make setup)")
    return Sandbox(Limits(timeout_s=3.0, memory_mb=512, disk_mb=8, file_size_mb=4, nproc=32))


def test_correct_program_passes(sandbox):
    # Guards: the harness is not so strict that nothing passes.
    r = sandbox.run(CHECK_OK)
    assert r.status == "pass", r.detail


def test_failing_assertion_is_fail(sandbox):
    r = sandbox.run(CHECK_OK.replace("x + 1", "x + 2"))
    assert r.status == "fail" and "AssertionError" in r.detail


def test_exception_is_error(sandbox):
    assert sandbox.run("undefined_name\n").status == "error"
    assert sandbox.run("def broken(:\n").status == "error"


@pytest.mark.parametrize(
    "early_exit",
    [
        "import os\nos._exit(0)\n",
        "import sys\nsys.exit(0)\n",
        "exit(0)\n",
        "raise SystemExit(0)\n",
    ],
)
def test_early_exit_zero_is_not_a_pass(sandbox, early_exit):
    # Guards the core harness property: exiting with status 0 before check() ran is a fail.
    program = early_exit + CHECK_OK.replace("x + 1", "x + 2")
    assert sandbox.run(program).status in ("fail", "error")


def test_forged_result_fd_is_not_a_pass(sandbox):
    # Guards: writing to the result pipe without the nonce cannot fake a pass.
    program = "import os\nfor fd in range(3, 20):\n    try: os.write(fd, b'0' * 32)\n    except OSError: pass\nos._exit(0)\n"
    assert sandbox.run(program).status == "fail"


def test_patched_builtins_do_not_pass(sandbox):
    # Guards: neutering exit/AssertionError/print does not make wrong code pass.
    program = (
        "import builtins, sys\n"
        "builtins.exit = lambda *a: None\nsys.exit = lambda *a: None\n"
        "builtins.AssertionError = type('Nope', (Exception,), {})\n"
        "builtins.print = lambda *a, **k: None\n" + CHECK_OK.replace("x + 1", "x + 2")
    )
    assert sandbox.run(program).status in ("fail", "error")


def test_infinite_loop_times_out(sandbox):
    t0 = time.perf_counter()
    r = sandbox.run("while True:\n    pass\n")
    assert r.status == "timeout"
    assert time.perf_counter() - t0 < 3.0 + 5  # killed near the limit, not left running


def test_fork_bomb_is_contained(sandbox):
    # Guards: the process limit stops a fork bomb and the tree is killed afterwards.
    program = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    r = sandbox.run(program)
    assert r.status in ("timeout", "fail", "error")
    assert sandbox.run(CHECK_OK).status == "pass"  # the machine is still usable


def test_huge_allocation_fails(sandbox):
    r = sandbox.run("x = bytearray(8 * 1024**3)\n")
    assert r.status == "error" and "MemoryError" in r.detail


def test_disk_filling_stops_at_limits(sandbox):
    # Guards: the working directory is a small tmpfs and single files are size-limited.
    program = (
        "import os\nfor i in range(1000):\n"
        "    with open(f'f{i}', 'wb') as fh:\n        fh.write(os.urandom(1 << 20))\n"
    )
    r = sandbox.run(program)
    assert r.status in ("fail", "error")


def test_cannot_write_outside_workdir(sandbox, tmp_path):
    target = tmp_path / "owned"
    program = f"open({str(target)!r}, 'w').write('x')\n"
    assert sandbox.run(program).status == "error"
    assert not target.exists()
    assert sandbox.run("open('/etc/codetune-owned', 'w')\n").status == "error"
    assert not os.path.exists("/etc/codetune-owned")


def test_killing_parent_does_not_hurt_harness(sandbox):
    program = (
        "import os, signal\n"
        "for pid in (os.getppid(), 1):\n"
        "    try: os.kill(pid, signal.SIGKILL)\n    except OSError: pass\n"
        "os.kill(0, signal.SIGKILL)\n"
    )
    r = sandbox.run(program)
    assert r.status in ("fail", "error")
    assert sandbox.run(CHECK_OK).status == "pass"


def test_env_secrets_are_invisible(sandbox, monkeypatch):
    # Guards: credentials in the harness's environment never reach generated code.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sekrit-value")
    program = (
        "import os\n"
        "assert 'AWS_SECRET_ACCESS_KEY' not in os.environ\n"
        "assert not any('sekrit' in v for v in os.environ.values())\n"
        "assert set(os.environ) <= {'HOME', 'LANG', 'LC_CTYPE', 'PATH', 'PWD'}, sorted(os.environ)\n"
    )
    r = sandbox.run(program)
    assert r.status == "pass", r.detail


def test_network_is_unreachable(sandbox):
    program = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('1.1.1.1', 80), timeout=2)\n"
        "except OSError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('connected')\n"
    )
    r = sandbox.run(program)
    assert r.status == "pass", r.detail


def test_run_many_keeps_order(sandbox):
    progs = [CHECK_OK, "assert False\n", CHECK_OK]
    assert [r.status for r in sandbox.run_many(progs)] == ["pass", "fail", "pass"]
