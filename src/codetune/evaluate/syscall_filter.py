"""The sandbox's seccomp-bpf filter: built once with libseccomp (``pyseccomp``), loaded into
each program's process after fork and before exec (or handed to bubblewrap's ``--seccomp``).

Default allow; the calls below fail with EPERM (clone3 with ENOSYS, so that glibc falls back
to clone, whose flags the filter can read). Architectures other than the native one are
killed (libseccomp's default for a foreign arch), so 32-bit ``int 0x80`` calls cannot slip
past. An unprivileged process can install it on itself under ``no_new_privs``, also inside a
container that already has a seccomp filter (Docker's default allows ``seccomp``/``prctl``):
filters stack and the strictest answer wins.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import tempfile
from functools import lru_cache

# Whole system calls denied: other processes' memory, mounts and namespaces, kernel keyrings,
# eBPF and perf, kernel modules and kexec, io_uring (its opcodes create sockets and open
# files without the system calls this filter sees), host administration.
DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr",
    "unshare", "setns",
    "keyctl", "add_key", "request_key",
    "bpf", "perf_event_open", "userfaultfd",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog", "iopl",
    "ioperm", "modify_ldt", "lookup_dcookie", "nfsservctl", "uselib", "vhangup",
    "name_to_handle_at", "open_by_handle_at", "fanotify_init",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "sethostname", "setdomainname",
)  # fmt: skip
# clone flags that create namespaces (CLONE_NEWTIME shares its bit with CSIGNAL in clone()).
CLONE_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)
# personality() bits that weaken exploit mitigations (ASLR off, executable data, low maps).
PERSONALITY_FLAGS = (0x0040000, 0x0100000, 0x0200000, 0x0400000, 0x0800000, 0x8000000)
# ioctl requests that push input into a terminal or the console (compared on 32 bits).
IOCTL_REQUESTS = (0x5412, 0x541C)  # TIOCSTI, TIOCLINUX

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


class SeccompUnavailable(RuntimeError):
    """libseccomp or its binding is missing, or the filter cannot be built here."""


@lru_cache(maxsize=1)
def compiled_filter() -> bytes:
    """The filter as a classic BPF program (what ``prctl(PR_SET_SECCOMP)`` and bubblewrap's
    ``--seccomp FD`` take). Raises SeccompUnavailable without libseccomp / pyseccomp."""
    try:
        import pyseccomp as sc
    except (ImportError, RuntimeError) as e:  # RuntimeError: "Unable to find libseccomp"
        raise SeccompUnavailable(f"pyseccomp/libseccomp not importable: {e}") from e
    f = sc.SyscallFilter(sc.ALLOW)
    deny = sc.ERRNO(errno.EPERM)
    for name in DENIED:
        try:
            f.add_rule(deny, name)
        except OSError:  # a name this libseccomp does not know: nothing to deny
            continue
    for call in ("socket", "socketpair"):
        f.add_rule(deny, call, sc.Arg(0, sc.NE, socket.AF_UNIX))
    for flag in CLONE_NAMESPACE_FLAGS:
        f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for flag in PERSONALITY_FLAGS:
        f.add_rule(deny, "personality", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    for req in IOCTL_REQUESTS:
        f.add_rule(deny, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, req))
    # The loader sets no_new_privs itself; libseccomp must not load anything here.
    with tempfile.TemporaryFile() as fh:
        f.export_bpf(fh)
        fh.seek(0)
        return fh.read()


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class Loader:
    """Loads the compiled filter into the calling process. Built in the parent; ``load`` runs
    in the child between fork and exec (no allocation beyond ctypes' own call)."""

    def __init__(self, bpf: bytes) -> None:
        if len(bpf) % 8:
            raise SeccompUnavailable(f"compiled filter has {len(bpf)} bytes, not a multiple of 8")
        self._buf = ctypes.create_string_buffer(bpf, len(bpf))
        self._prog = _SockFprog(len(bpf) // 8, ctypes.cast(self._buf, ctypes.c_void_p))
        # Resolved here, in the parent: dlsym in a child forked from a threaded process
        # could wait on a loader lock that another thread held at fork time.
        self._prctl = ctypes.CDLL(None, use_errno=True).prctl
        self._prog_ref = ctypes.byref(self._prog)

    def load(self) -> None:
        """Set no_new_privs and install the filter; raises OSError if the kernel refuses."""
        prctl = self._prctl
        if prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"prctl(PR_SET_NO_NEW_PRIVS): {errno.errorcode.get(e, e)}")
        if prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, self._prog_ref, 0, 0) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"prctl(PR_SET_SECCOMP): {errno.errorcode.get(e, e)}")
