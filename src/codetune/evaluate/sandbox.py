"""Run untrusted Python programs (model-generated code + tests) in an OS sandbox.

Each program runs in its own process tree. Always applied:

- a wall-clock timeout (the whole process tree is killed) and ``RLIMIT_CPU``;
- ``RLIMIT_AS`` (memory), ``RLIMIT_FSIZE`` (file size), ``RLIMIT_NPROC`` (fork bombs) and
  ``RLIMIT_NOFILE``; when the harness is root the program runs as a fresh, random,
  unprivileged uid with no capabilities, so the process limit counts only its own processes
  and it cannot signal, trace or write anything of ours;
- a clean environment (``PATH=/usr/bin:/bin``, ``HOME``, ``LANG``: no AWS or other credentials).

Isolation layers, each used where it works here (``detect_layers``):

- ``bwrap`` (bubblewrap, outermost): new network (loopback only), PID, IPC and UTS
  namespaces, the host file system read-only, ``/root``, ``/home``, ``/tmp``, ``/run`` hidden
  behind empty tmpfs mounts and a fresh size-limited tmpfs as the working directory. It needs
  user namespaces or CAP_SYS_ADMIN, which a SageMaker (Docker) container does not grant;
- ``seccomp``: a seccomp-bpf filter (``syscall_filter.py``) that an unprivileged process
  installs on itself under ``no_new_privs`` before exec: no sockets but AF_UNIX, no ptrace,
  mount, namespaces, keyrings, bpf, io_uring, ... (EPERM);
- ``landlock``: the wrapper confines itself before the program runs (``sandbox_wrapper.py``):
  writes only beneath the working directory (and ``/dev/null``); no TCP, abstract unix
  sockets or signals outside, as far as the kernel's Landlock ABI offers.

Without ``bwrap`` the working directory is a host directory; a watchdog kills the program
when it, together with what the program's uid created directly in ``/tmp``, ``/var/tmp`` and
``/dev/shm``, grows past ``Limits.disk_mb`` (a tmpfs quota needs a mount); those entries are
deleted after the run.

A configured minimum (``require``, CLI ``--sandbox-require``, env ``CODETUNE_SANDBOX_REQUIRE``,
default ``seccomp``) makes ``Sandbox()`` raise ``SandboxUnavailable`` naming each missing
layer and how to get it, before anything expensive starts. ``allow_unsandboxed=True``
(``--allow-unsandboxed``) drops the minimum: every layer that works is still used.

A program passes only when the harness observes that the tests ran to completion: the
trusted wrapper reads a random nonce from stdin before the program starts and writes it to
an inherited pipe only after the program (with its ``check(...)`` call) returned. Exiting
early with status 0 (``os._exit(0)``, ``sys.exit(0)``, patched ``exit``) is a failure. Known
limit: the nonce lives in the same interpreter as the program, so a program written to
search the interpreter's memory for it could forge a pass; the guard is against code that
exits early or patches builtins, which is what generated code actually does.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

from codetune import jobenv
from codetune.errors import CodetuneError
from codetune.evaluate import sandbox_wrapper, syscall_filter

log = logging.getLogger(__name__)

STATUSES = ("pass", "fail", "timeout", "error")
# Exit codes the wrapper uses (anything else, including 0 without the nonce, is a fail).
EXIT_ASSERTION = sandbox_wrapper.EXIT_ASSERTION
EXIT_EXCEPTION = sandbox_wrapper.EXIT_EXCEPTION
EXIT_SANDBOX = sandbox_wrapper.EXIT_SANDBOX
# Random uids come from a range no real account uses (Debian reserves < 65536).
UID_RANGE = (200_000, 900_000)
HIDDEN_DIRS = ("/root", "/home", "/tmp", "/var/tmp", "/run")
SANDBOX_DIR = "/run/codetune"  # read-only: wrapper + program (under a tmpfs: / is read-only)
WORK_DIR = "/tmp/work"  # fresh tmpfs: the program's cwd and only writable place
# Without bwrap (which hides them) a program may write where anyone may: what its throwaway
# uid creates directly in these counts against Limits.disk_mb and is deleted after the run.
SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm")

# Isolation layers, outermost first. rlimits, the clean environment and (as root) the uid
# switch always apply and are reported as "rlimits", "clean-env", "uid-switch".
LAYERS = ("bwrap", "seccomp", "landlock")
DEFAULT_REQUIRE = ("seccomp",)
REQUIRE_ENV = jobenv.SANDBOX_REQUIRE
HOW_TO_GET = {
    "bwrap": "install bubblewrap (apt-get install bubblewrap) and run where it may create "
    "namespaces (user namespaces or CAP_SYS_ADMIN; a SageMaker/Docker container allows neither)",
    "seccomp": "install libseccomp2 (apt-get install libseccomp2) and pyseccomp "
    "(pip install 'codetune[train]')",
    "landlock": "run on Linux >= 5.13 with Landlock enabled (CONFIG_SECURITY_LANDLOCK=y and "
    "'landlock' in the kernel's lsm= list)",
}

# Probe: inside, the network namespace has only "lo" (2 header lines + lo in /proc/net/dev).
PROBE = 'test "$(wc -l < /proc/net/dev)" -le 3'
# Probe: under the filter an AF_INET socket must be refused with EPERM.
SECCOMP_PROBE = (
    "import errno, socket\n"
    "try:\n    socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "except PermissionError:\n    raise SystemExit(0)\n"
    "raise SystemExit('socket(AF_INET) was allowed')\n"
)
WRAPPER = Path(sandbox_wrapper.__file__).read_text(encoding="utf-8")


class SandboxUnavailable(CodetuneError):
    """A required sandbox layer does not work here and the caller did not allow running
    without it."""


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


def _bwrap_argv(
    host_dir: str, limits: Limits, uid: int | None, seccomp_fd: int | None
) -> list[str]:
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
    if seccomp_fd is not None:
        # bwrap loads it after its own setup, right before exec (its mounts need the calls
        # the filter denies).
        argv += ["--seccomp", str(seccomp_fd)]
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


def _random_uid() -> int:
    return secrets.randbelow(UID_RANGE[1] - UID_RANGE[0]) + UID_RANGE[0]


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


def _preexec(limits: Limits, nproc: int, seccomp: syscall_filter.Loader | None):
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
        if seccomp is not None:
            # Last: from here on setpriv and Python start under the filter. A failure
            # raises in the child and Popen re-raises it here as SubprocessError.
            seccomp.load()

    return setup


def _probe_bwrap() -> tuple[str | None, str]:
    """(``"bwrap-root"`` / ``"bwrap-userns"``, "") when a probe sandbox really runs here
    (network namespace included), else (None, why not)."""
    if not shutil.which("bwrap"):
        return None, "bwrap is not on PATH"
    root = _is_root()
    if root and not shutil.which("setpriv"):
        return None, "setpriv (util-linux) is not on PATH"
    with tempfile.TemporaryDirectory(prefix="codetune-probe-") as d:
        os.chmod(d, 0o755)
        uid = _random_uid() if root else None
        argv = _bwrap_argv(d, Limits(), uid, None) + ["/bin/sh", "-c", PROBE]
        try:
            r = subprocess.run(argv, capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"bubblewrap probe failed: {e}"
    if r.returncode != 0:
        return None, f"bubblewrap probe failed ({r.returncode}): {r.stderr.decode()[-300:].strip()}"
    return ("bwrap-root" if root else "bwrap-userns"), ""


def _probe_seccomp() -> str:
    """ "" when the filter builds, loads and refuses AF_INET in a child here, else why not."""
    try:
        loader = syscall_filter.Loader(syscall_filter.compiled_filter())
    except syscall_filter.SeccompUnavailable as e:
        return str(e)
    try:
        r = subprocess.run(
            [sys.executable, "-I", "-B", "-c", SECCOMP_PROBE],
            capture_output=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
            preexec_fn=loader.load,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"loading the seccomp filter failed: {e}"
    if r.returncode != 0:
        return f"seccomp probe failed ({r.returncode}): {r.stderr.decode()[-300:].strip()}"
    return ""


@dataclasses.dataclass(frozen=True)
class Detected:
    """What works on this machine: ``reasons[layer]`` is "" when it does, else why not."""

    reasons: dict
    bwrap_mode: str | None  # "bwrap-root" | "bwrap-userns"
    landlock_abi: int

    def available(self, layer: str) -> bool:
        return self.reasons.get(layer) == ""


@lru_cache(maxsize=1)
def detect_layers() -> Detected:
    """Probe every isolation layer for real (a bubblewrap sandbox with its network namespace,
    a child under the seccomp filter, the kernel's Landlock ABI). Cached for the process."""
    mode, bwrap_why = _probe_bwrap()
    abi, landlock_why = sandbox_wrapper.landlock_abi()
    reasons = {"bwrap": bwrap_why, "seccomp": _probe_seccomp(), "landlock": landlock_why}
    for layer, why in reasons.items():
        if why:
            log.info("sandbox layer %s unavailable: %s", layer, why)
    return Detected(reasons, mode, abi)


def parse_layers(text: str | list[str] | tuple[str, ...], what: str) -> tuple[str, ...]:
    """``"seccomp,landlock"`` (or a list) -> validated layer names; CodetuneError naming
    ``what`` (the flag or variable) for an unknown one."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [x.strip() for x in items if x.strip()]
    unknown = [x for x in names if x not in LAYERS]
    if unknown:
        raise CodetuneError(
            f"{what}: unknown sandbox layer(s) {', '.join(unknown)}; choose from {', '.join(LAYERS)}"
        )
    return tuple(dict.fromkeys(names))


def required_layers(require: str | list[str] | tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The configured minimum: ``require`` if given, else ``$CODETUNE_SANDBOX_REQUIRE``, else
    ``DEFAULT_REQUIRE``. Raises CodetuneError for unknown names or an empty list."""
    if require is not None:
        names, what = parse_layers(require, "--sandbox-require"), "--sandbox-require"
    elif os.environ.get(REQUIRE_ENV, "").strip():
        names, what = parse_layers(os.environ[REQUIRE_ENV], REQUIRE_ENV), REQUIRE_ENV
    else:
        return DEFAULT_REQUIRE
    if not names:
        raise CodetuneError(f"{what} names no layer; use --allow-unsandboxed to run without one")
    return names


class Sandbox:
    """Executes programs; ``run`` one, ``run_many`` in parallel (``workers`` processes).

    ``layers`` restricts which isolation layers may be used (default: all that work here);
    ``require`` is the minimum (see ``required_layers``). Raises SandboxUnavailable when a
    required layer does not work here and ``allow_unsandboxed`` is false.
    """

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        allow_unsandboxed: bool = False,
        require: str | list[str] | tuple[str, ...] | None = None,
        layers: list[str] | tuple[str, ...] | None = None,
        workers: int = 2,
        python: str | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.workers = max(1, workers)
        self.python = python or sys.executable
        detected = detect_layers()
        wanted = LAYERS if layers is None else parse_layers(layers, "layers")
        self.required = () if allow_unsandboxed else required_layers(require)
        self.layers = tuple(x for x in LAYERS if x in wanted and detected.available(x))
        self.bwrap_mode = detected.bwrap_mode if "bwrap" in self.layers else None
        self.landlock_abi = detected.landlock_abi if "landlock" in self.layers else 0
        missing = [x for x in self.required if x not in self.layers]
        if missing:
            lines = [
                f"- {x}: "
                + (detected.reasons[x] or "switched off for this run")
                + f"; to get it: {HOW_TO_GET[x]}"
                for x in missing
            ]
            raise SandboxUnavailable(
                "refusing to execute generated code: the required sandbox layer(s) "
                f"{', '.join(missing)} (--sandbox-require / {REQUIRE_ENV}: "
                f"{','.join(self.required)}) do not work here:\n" + "\n".join(lines) + "\n"
                "Require fewer layers or, if you trust the code, pass --allow-unsandboxed "
                f"(then only {', '.join(self.layers) or 'rlimits and a clean environment'} apply)"
            )
        if not self.layers:
            log.warning("executing generated code WITHOUT OS isolation (--allow-unsandboxed)")
        elif allow_unsandboxed:
            log.warning(
                "--allow-unsandboxed: executing generated code with %s", ", ".join(self.layers)
            )
        self._seccomp = (
            syscall_filter.Loader(syscall_filter.compiled_filter())
            if "seccomp" in self.layers
            else None
        )

    def describe(self) -> dict:
        """What protected the programs, for report.json: the active layers (always-on
        measures included), the required minimum, the Landlock ABI used."""
        always = ["rlimits", "clean-env"] + (["uid-switch"] if _is_root() else [])
        out = {"layers": [*self.layers, *always], "required": list(self.required)}
        if self.bwrap_mode:
            out["bwrap"] = self.bwrap_mode.removeprefix("bwrap-")
        if self.landlock_abi:
            out["landlock_abi"] = self.landlock_abi
        return out

    def run(self, source: str) -> ExecResult:
        """Run ``source`` (program + tests, ending with its ``check(...)`` call)."""
        limits = self.limits
        uid = _random_uid() if _is_root() else None
        with tempfile.TemporaryDirectory(prefix="codetune-exec-") as host:
            _write_program(host, source)
            read_fd, write_fd = os.pipe()
            if self.bwrap_mode is None:
                launch = self._direct_launch(host, uid, write_fd)
            else:
                launch = self._bwrap_launch(host, uid, write_fd)
            if self.landlock_abi:
                launch.argv += ["--landlock", str(self.landlock_abi)]
            # A fresh uid owns no processes; without one, allow ours plus a margin.
            nproc = limits.nproc if uid is not None else _user_process_count() + limits.nproc
            err_path = Path(host) / "stderr.txt"
            t0 = time.perf_counter()
            with open(err_path, "wb") as err:
                proc = _start(launch, err, write_fd, _preexec(limits, nproc, launch.seccomp))
                try:
                    nonce = _send_nonce(proc)
                    disk = None
                    if launch.work is not None:
                        work = launch.work
                        disk = (
                            lambda: _disk_usage(work) + _shared_usage(uid),
                            limits.disk_mb << 20,
                        )
                    output, timed_out, over_disk = _collect(
                        proc, read_fd, t0 + limits.timeout_s, disk
                    )
                finally:
                    os.close(read_fd)
                    _kill_tree(proc, uid)
                    if launch.work is not None:
                        _remove_shared(uid)
            duration = time.perf_counter() - t0
            detail = _tail(err_path)
        passed = output == nonce.encode()
        return _verdict(passed, proc.returncode, timed_out, over_disk, duration, detail, limits)

    def _direct_launch(self, host: str, uid: int | None, write_fd: int) -> _Launch:
        """No bubblewrap: the program runs in a fresh ``work`` folder as ``uid`` (when root),
        with seccomp loaded in the child before exec."""
        work = Path(host) / "work"
        work.mkdir()
        if uid is not None:
            os.chown(work, uid, uid)
        prefix = _setpriv(uid) if uid is not None else []
        argv = [*prefix, self.python, "-I", "-B", f"{host}/wrapper.py"]
        argv += [f"{host}/program.py", str(write_fd)]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8"}
        return _Launch(argv, str(work), env, [write_fd], seccomp=self._seccomp, work=work)

    def _bwrap_launch(self, host: str, uid: int | None, write_fd: int) -> _Launch:
        """Bubblewrap: ``host`` is mounted at SANDBOX_DIR; bwrap loads the seccomp filter from
        a memfd it inherits."""
        pass_fds = [write_fd]
        seccomp_fd = None
        if self._seccomp is not None:
            seccomp_fd = os.memfd_create("codetune-seccomp", 0)
            os.write(seccomp_fd, syscall_filter.compiled_filter())
            os.lseek(seccomp_fd, 0, os.SEEK_SET)
            pass_fds.append(seccomp_fd)
        argv = _bwrap_argv(host, self.limits, uid, seccomp_fd)
        argv += [self.python, "-I", "-B", f"{SANDBOX_DIR}/wrapper.py"]
        argv += [f"{SANDBOX_DIR}/program.py", str(write_fd)]
        return _Launch(argv, host, {"PATH": "/usr/bin:/bin"}, pass_fds, seccomp_fd=seccomp_fd)

    def run_many(self, sources: list[str]) -> list[ExecResult]:
        """Run programs in parallel (``workers`` at a time), results in input order."""
        if self.workers == 1 or len(sources) <= 1:
            return [self.run(s) for s in sources]
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(self.run, sources))


@dataclasses.dataclass
class _Launch:
    """How one program is started: the command line, its folder and environment, the file
    descriptors it inherits, and what the parent must clean up."""

    argv: list[str]
    cwd: str
    env: dict[str, str]
    pass_fds: list[int]
    seccomp: syscall_filter.Loader | None = None  # loaded in the child (no bwrap)
    work: Path | None = None  # the writable folder whose size is watched (no bwrap)
    seccomp_fd: int | None = None  # the memfd bwrap reads the filter from


def _write_program(host: str, source: str) -> None:
    """The wrapper and the program, readable by the sandbox's uid."""
    os.chmod(host, 0o755)
    for name, text in (("wrapper.py", WRAPPER), ("program.py", source)):
        p = Path(host) / name
        p.write_text(text, encoding="utf-8")
        p.chmod(0o644)


def _start(launch: _Launch, err, write_fd: int, preexec_fn) -> subprocess.Popen:
    """Start the program; the parent's copies of the inherited descriptors close either way."""
    try:
        return subprocess.Popen(
            launch.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=launch.cwd,
            env=launch.env,
            pass_fds=tuple(launch.pass_fds),
            preexec_fn=preexec_fn,
            start_new_session=True,
        )
    except subprocess.SubprocessError as e:
        raise CodetuneError(f"the sandbox failed to start: {e}") from e
    finally:
        os.close(write_fd)
        if launch.seccomp_fd is not None:
            os.close(launch.seccomp_fd)


def _send_nonce(proc: subprocess.Popen) -> str:
    """Hand the program the secret it writes back only after its tests passed."""
    nonce = secrets.token_hex(16)
    try:
        proc.stdin.write(nonce.encode() + b"\n")
        proc.stdin.close()
    except BrokenPipeError:
        pass
    return nonce


def _verdict(
    passed: bool,
    returncode: int,
    timed_out: bool,
    over_disk: bool,
    duration: float,
    detail: str,
    limits: Limits,
) -> ExecResult:
    """Turn how the program ended into pass/fail/timeout/error; raise when the sandbox
    itself could not start it."""
    if passed and returncode == 0 and not over_disk:
        return ExecResult("pass", duration, detail)
    if over_disk:
        detail = (detail + f"\nkilled: its files grew past {limits.disk_mb} MiB").strip()
        return ExecResult("fail", duration, detail)
    if timed_out:
        return ExecResult("timeout", duration, detail)
    if returncode == 1 and "bwrap:" in detail and "Traceback" not in detail:
        raise CodetuneError(f"the sandbox failed to start: {detail}")
    if returncode == EXIT_SANDBOX and "codetune-sandbox:" in detail:
        raise CodetuneError(f"the sandbox failed to start: {detail}")
    if returncode == EXIT_EXCEPTION:
        return ExecResult("error", duration, detail)
    if returncode == 0:
        detail = (detail + "\nexited with status 0 before its tests completed").strip()
    return ExecResult("fail", duration, detail)


def _collect(
    proc: subprocess.Popen,
    fd: int,
    deadline: float,
    disk: tuple[Callable[[], int], int] | None = None,
) -> tuple[bytes, bool, bool]:
    """Read the result pipe until the program's main process exits or the deadline passes.

    Returns (bytes read, timed out, over disk). Does not wait for EOF: a background child
    holding the pipe open must not turn a finished program into a timeout. With ``disk``
    (a function measuring the program's bytes on disk and its limit) the usage is measured
    every 0.1 s and the program stopped once it is larger.
    """
    import select

    out = bytearray()
    eof = False
    next_du = time.perf_counter() + 0.1
    while True:
        now = time.perf_counter()
        left = deadline - now
        if left <= 0:
            return bytes(out), True, False
        if disk is not None and now >= next_du:
            next_du = now + 0.1
            if disk[0]() > disk[1]:
                return bytes(out), False, True
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
            return bytes(out), False, False
        if eof:
            try:
                proc.wait(timeout=min(left, 0.1))
            except subprocess.TimeoutExpired:
                pass


def _shared_entries(uid: int | None) -> list[os.DirEntry]:
    """What the throwaway ``uid`` created directly in the world-writable ``SHARED_DIRS``."""
    if uid is None:
        return []
    out = []
    for d in SHARED_DIRS:
        try:
            with os.scandir(d) as it:
                for e in it:
                    try:
                        if e.stat(follow_symlinks=False).st_uid == uid:
                            out.append(e)
                    except OSError:
                        continue
        except OSError:
            continue
    return out


def _shared_usage(uid: int | None) -> int:
    total = 0
    for e in _shared_entries(uid):
        if e.is_dir(follow_symlinks=False):
            total += _disk_usage(Path(e.path))
        else:
            try:
                total += e.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                pass
    return total


def _remove_shared(uid: int | None) -> None:
    """Delete what the throwaway ``uid`` left in ``SHARED_DIRS`` (its processes are dead)."""
    for e in _shared_entries(uid):
        if e.is_dir(follow_symlinks=False):
            shutil.rmtree(e.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(e.path)


def _disk_usage(root: Path) -> int:
    """Bytes allocated beneath ``root`` (hard links counted once)."""
    total, seen = 0, set()
    stack = [str(root)]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for e in entries:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    return total


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
