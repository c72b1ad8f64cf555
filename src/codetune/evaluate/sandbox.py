"""Run untrusted Python programs (model-generated code + tests) in an OS sandbox.

Each program runs in its own process tree with:

- a wall-clock timeout (the whole process tree is killed) and ``RLIMIT_CPU``;
- ``RLIMIT_AS`` (memory), ``RLIMIT_FSIZE`` (file size), ``RLIMIT_NPROC`` (fork bombs) and
  ``RLIMIT_NOFILE``; the program runs as a fresh, random, unprivileged uid so the process
  limit counts only its own processes, and it cannot signal anything else on the machine;
- a clean environment (``PATH=/usr/bin:/bin``, nothing else: no AWS or other credentials);
- bubblewrap isolation: new network namespace (no interfaces but loopback: connects fail),
  new PID namespace (it sees only its own processes; killing its "parent" kills nothing of
  ours), the host file system read-only, ``/root``, ``/home``, ``/tmp``, ``/run`` hidden behind
  empty tmpfs mounts, and a fresh size-limited tmpfs as its working directory — the only
  place it can write;
- no new privileges, an empty capability bounding set.

A program passes only when the harness observes that the tests ran to completion: the
trusted wrapper reads a random nonce from stdin before the program starts and writes it to
an inherited pipe only after the program (with its ``check(...)`` call) returned. Exiting
early with status 0 (``os._exit(0)``, ``sys.exit(0)``, patched ``exit``) is a failure. Known
limit: the nonce lives in the same interpreter as the program, so a program written to
search the interpreter's memory for it could forge a pass; the guard is against code that
exits early or patches builtins, which is what generated code actually does.

Without working bubblewrap the sandbox refuses to run (``SandboxUnavailable``) unless the
caller passes ``allow_unsandboxed=True`` (CLI: ``--allow-unsandboxed``); then only the
rlimits, clean environment, temp directory and — when running as root — the uid switch apply.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

from codetune.errors import CodetuneError

log = logging.getLogger(__name__)

STATUSES = ("pass", "fail", "timeout", "error")
# Exit codes the wrapper uses (anything else, including 0 without the nonce, is a fail).
EXIT_ASSERTION = 1
EXIT_EXCEPTION = 2
# Random uids come from a range no real account uses (Debian reserves < 65536).
UID_RANGE = (200_000, 900_000)
HIDDEN_DIRS = ("/root", "/home", "/tmp", "/var/tmp", "/run")
SANDBOX_DIR = "/run/codetune"  # read-only: wrapper + program (under a tmpfs: / is read-only)
WORK_DIR = "/tmp/work"  # fresh tmpfs: the program's cwd and only writable place

# Probe: inside, the network namespace has only "lo" (2 header lines + lo in /proc/net/dev).
PROBE = 'test "$(wc -l < /proc/net/dev)" -le 3'

WRAPPER = r"""
import os, sys, traceback
def _main():
    write, exit_, fd = os.write, os._exit, int(sys.argv[2])
    nonce = sys.stdin.readline().strip().encode()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    with open(sys.argv[1], encoding="utf-8") as fh:
        source = fh.read()
    g = {"__name__": "__main__", "__file__": "program.py", "__builtins__": __builtins__}
    try:
        exec(compile(source, "program.py", "exec"), g)
    except AssertionError:
        traceback.print_exc()
        exit_(@ASSERTION@)
    except BaseException:
        # SystemExit included: a program that exits before its tests finish did not pass.
        traceback.print_exc()
        exit_(@EXCEPTION@)
    write(fd, nonce)
    exit_(0)
_main()
""".replace("@ASSERTION@", str(EXIT_ASSERTION)).replace("@EXCEPTION@", str(EXIT_EXCEPTION))


class SandboxUnavailable(CodetuneError):
    """No OS isolation here and the caller did not allow unsandboxed execution."""


@dataclasses.dataclass
class ExecResult:
    """Outcome of one program."""

    status: str  # pass | fail | timeout | error
    duration_s: float
    detail: str = ""  # last lines of stderr (why it failed)

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclasses.dataclass
class Limits:
    """Resource limits for one program."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    file_size_mb: int = 16
    disk_mb: int = 64  # size of the tmpfs working directory
    nproc: int = 64
    nofile: int = 256


def _is_root() -> bool:
    return os.geteuid() == 0


def _python_binds() -> list[str]:
    """Directories of the Python installation that a hidden dir (e.g. /root) would cover."""
    dirs = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix)}
    dirs.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    out = []
    for d in sorted(dirs):
        if any(d == h or d.startswith(h + "/") for h in HIDDEN_DIRS):
            out += ["--ro-bind", d, d]
    return out


def _bwrap_argv(host_dir: str, limits: Limits, uid: int | None) -> list[str]:
    argv = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for d in HIDDEN_DIRS:
        if os.path.isdir(d):
            argv += ["--perms", "0755", "--size", str(4 << 20), "--tmpfs", d]
    argv += _python_binds()
    argv += ["--perms", "1777", "--size", str(limits.disk_mb << 20), "--tmpfs", WORK_DIR]
    argv += ["--ro-bind", host_dir, SANDBOX_DIR, "--chdir", WORK_DIR]
    argv += ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    argv += ["--die-with-parent", "--new-session", "--clearenv"]
    argv += ["--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", WORK_DIR]
    argv += ["--setenv", "LANG", "C.UTF-8"]
    if uid is not None:
        # Root outside: bwrap sets up mounts privileged, then setpriv drops to the random
        # uid with no capabilities and no_new_privs before Python starts.
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--"]
        argv += _setpriv(uid)
    else:
        # Unprivileged: bwrap makes a user namespace; we stay our own (mapped) uid.
        argv += ["--unshare-user", "--disable-userns", "--"]
    return argv


def _setpriv(uid: int) -> list[str]:
    return [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]


def _user_process_count() -> int:
    uid = os.getuid()
    n = 0
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if p.stat().st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def _preexec(limits: Limits, nproc: int):
    def setup() -> None:
        cpu = int(limits.timeout_s) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        mem = limits.memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        fsize = limits.file_size_mb << 20
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.nofile, limits.nofile))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return setup


@lru_cache(maxsize=1)
def detect_isolation() -> str | None:
    """``"bwrap-root"`` / ``"bwrap-userns"`` when a probe sandbox really runs here (network
    namespace included), else ``None``. Cached for the process."""
    if not shutil.which("bwrap"):
        return None
    root = _is_root()
    if root and not shutil.which("setpriv"):
        return None
    with tempfile.TemporaryDirectory(prefix="codetune-probe-") as d:
        os.chmod(d, 0o755)
        uid = secrets.randbelow(UID_RANGE[1] - UID_RANGE[0]) + UID_RANGE[0] if root else None
        argv = _bwrap_argv(d, Limits(), uid) + ["/bin/sh", "-c", PROBE]
        try:
            r = subprocess.run(argv, capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("bubblewrap probe failed: %s", e)
            return None
    if r.returncode != 0:
        log.warning("bubblewrap probe failed (%d): %s", r.returncode, r.stderr.decode()[-300:])
        return None
    return "bwrap-root" if root else "bwrap-userns"


class Sandbox:
    """Executes programs; ``run`` one, ``run_many`` in parallel (``workers`` processes)."""

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        allow_unsandboxed: bool = False,
        workers: int = 2,
        python: str | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.workers = max(1, workers)
        self.python = python or sys.executable
        self.isolation = detect_isolation()
        if self.isolation is None:
            if not allow_unsandboxed:
                raise SandboxUnavailable(
                    "refusing to execute generated code: OS isolation (bubblewrap with network "
                    "and PID namespaces) does not work on this machine. Install it "
                    "(apt-get install bubblewrap) or, if you trust the code, pass "
                    "--allow-unsandboxed (only rlimits and a clean environment then apply)"
                )
            log.warning("executing generated code WITHOUT OS isolation (--allow-unsandboxed)")
            self.isolation = "none"

    def run(self, source: str) -> ExecResult:
        """Run ``source`` (program + tests, ending with its ``check(...)`` call)."""
        limits = self.limits
        root = _is_root()
        uid = secrets.randbelow(UID_RANGE[1] - UID_RANGE[0]) + UID_RANGE[0] if root else None
        with tempfile.TemporaryDirectory(prefix="codetune-exec-") as host:
            os.chmod(host, 0o755)
            for name, text in (("wrapper.py", WRAPPER), ("program.py", source)):
                p = Path(host) / name
                p.write_text(text, encoding="utf-8")
                p.chmod(0o644)
            read_fd, write_fd = os.pipe()
            if self.isolation == "none":
                work = Path(host) / "work"
                work.mkdir()
                if uid is not None:
                    os.chown(work, uid, uid)
                prefix = _setpriv(uid) if uid is not None else []
                argv = [*prefix, self.python, "-I", "-B", f"{host}/wrapper.py"]
                argv += [f"{host}/program.py", str(write_fd)]
                cwd, env = str(work), {"PATH": "/usr/bin:/bin", "HOME": str(work)}
            else:
                argv = _bwrap_argv(host, limits, uid)
                argv += [self.python, "-I", "-B", f"{SANDBOX_DIR}/wrapper.py"]
                argv += [f"{SANDBOX_DIR}/program.py", str(write_fd)]
                cwd, env = host, {"PATH": "/usr/bin:/bin"}
            # A fresh uid owns no processes; without one, allow ours plus a margin.
            nproc = limits.nproc if uid is not None else _user_process_count() + limits.nproc
            err_path = Path(host) / "stderr.txt"
            t0 = time.perf_counter()
            with open(err_path, "wb") as err:
                try:
                    proc = subprocess.Popen(
                        argv,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                        cwd=cwd,
                        env=env,
                        pass_fds=(write_fd,),
                        preexec_fn=_preexec(limits, nproc),
                        start_new_session=True,
                    )
                finally:
                    os.close(write_fd)
                try:
                    nonce = secrets.token_hex(16)
                    try:
                        proc.stdin.write(nonce.encode() + b"\n")
                        proc.stdin.close()
                    except BrokenPipeError:
                        pass
                    output, timed_out = _collect(proc, read_fd, t0 + limits.timeout_s)
                finally:
                    os.close(read_fd)
                    _kill_tree(proc, uid)
            duration = time.perf_counter() - t0
            detail = _tail(err_path)
        if output == nonce.encode() and proc.returncode == 0:
            return ExecResult("pass", duration, detail)
        if timed_out:
            return ExecResult("timeout", duration, detail)
        if proc.returncode == 1 and "bwrap:" in detail and "Traceback" not in detail:
            raise CodetuneError(f"the sandbox failed to start: {detail}")
        if proc.returncode == EXIT_EXCEPTION:
            return ExecResult("error", duration, detail)
        if proc.returncode == 0:
            detail = (detail + "\nexited with status 0 before its tests completed").strip()
        return ExecResult("fail", duration, detail)

    def run_many(self, sources: list[str]) -> list[ExecResult]:
        """Run programs in parallel (``workers`` at a time), results in input order."""
        if self.workers == 1 or len(sources) <= 1:
            return [self.run(s) for s in sources]
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(self.run, sources))


def _collect(proc: subprocess.Popen, fd: int, deadline: float) -> tuple[bytes, bool]:
    """Read the result pipe until the program's main process exits or the deadline passes.

    Returns (bytes read, timed out). Does not wait for EOF: a background child holding the
    pipe open must not turn a finished program into a timeout.
    """
    import select

    out = bytearray()
    eof = False
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            return bytes(out), True
        if not eof:
            ready, _, _ = select.select([fd], [], [], min(left, 0.05))
            if ready:
                data = os.read(fd, 65536)
                eof = not data
                if len(out) < 4096:  # the nonce is 32 bytes; more is forgery or noise
                    out += data
        if proc.poll() is not None:
            os.set_blocking(fd, False)
            try:
                while len(out) < 4096 and (data := os.read(fd, 65536)):
                    out += data
            except BlockingIOError:
                pass
            return bytes(out), False
        if eof:
            try:
                proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                return bytes(out), True


def _kill_tree(proc: subprocess.Popen, uid: int | None) -> None:
    """Kill the program and everything it started (fork bombs included)."""
    if proc.poll() is None:
        # bwrap dies -> its PID-namespace init dies (die-with-parent) -> the kernel kills
        # every process of the namespace.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    proc.wait()
    if uid is not None:
        # Unsandboxed (or a leak): everything still running under the throwaway uid.
        subprocess.run(
            [*_setpriv(uid), "/bin/kill", "-9", "-1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )


def _tail(path: Path, limit: int = 1500) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
