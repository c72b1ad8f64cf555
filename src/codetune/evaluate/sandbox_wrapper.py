"""The trusted wrapper that runs inside the sandbox around each untrusted program.

Standard library only: the sandbox writes this file's source next to the program and starts
``python -I -B wrapper.py PROGRAM RESULT_FD [--landlock ABI]``. It

1. reads the harness's nonce from stdin, then points stdin at ``/dev/null``;
2. reads the program's source;
3. with ``--landlock ABI``: sets ``no_new_privs`` and confines the process with Landlock
   (writes only beneath the working directory and to ``/dev/null``; with ABI >= 4 no TCP
   bind/connect; with ABI >= 6 no abstract unix sockets or signals reaching outside) — on
   failure it exits with ``EXIT_SANDBOX`` before any untrusted code ran;
4. executes the program and writes the nonce to ``RESULT_FD`` only if it returned normally.

``landlock_abi()`` is also the harness's probe (imported by ``sandbox.py``).
"""

import errno
import os
import sys
import traceback

# ctypes is imported only when Landlock is used: a program without it starts ~5 ms sooner.

EXIT_ASSERTION = 1
EXIT_EXCEPTION = 2
EXIT_SANDBOX = 3  # a requested layer could not be installed: nothing untrusted ran

# <linux/landlock.h>; the generic syscall numbers are the same on every architecture.
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38

FS_WRITE_FILE = 1 << 1
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

WHY = {
    errno.ENOSYS: "the kernel has no Landlock (Linux >= 5.13 built with CONFIG_SECURITY_LANDLOCK)",
    errno.EOPNOTSUPP: "Landlock is disabled at boot ('landlock' missing from the lsm= list)",
    errno.EPERM: "a seccomp filter around this process blocks the Landlock system calls",
}


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _syscall(libc, *args):
    import ctypes

    libc.syscall.restype = ctypes.c_long
    ctypes.set_errno(0)
    r = libc.syscall(*args)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def landlock_abi():
    """Return ``(abi, reason)``: the kernel's Landlock ABI version (0 when unavailable) and,
    when 0, why."""
    try:
        abi = _syscall(
            _libc(), SYS_LANDLOCK_CREATE_RULESET, None, 0, LANDLOCK_CREATE_RULESET_VERSION
        )
    except OSError as e:
        return 0, WHY.get(e.errno, f"landlock_create_ruleset failed: {e}")
    return int(abi), ""


def write_rights(abi):
    """The file-system rights that mean "modify" for a Landlock ABI version."""
    fs = FS_WRITE_FILE | FS_REMOVE_DIR | FS_REMOVE_FILE | FS_MAKE_CHAR | FS_MAKE_DIR
    fs |= FS_MAKE_REG | FS_MAKE_SOCK | FS_MAKE_FIFO | FS_MAKE_BLOCK | FS_MAKE_SYM
    if abi >= 2:
        fs |= FS_REFER
    if abi >= 3:
        fs |= FS_TRUNCATE
    if abi >= 5:
        fs |= FS_IOCTL_DEV
    return fs


def landlock_confine(writable_dir, abi):
    """Restrict this process (and what it starts) for good: modifications only beneath
    ``writable_dir`` and to ``/dev/null``; no TCP (ABI >= 4); no abstract unix sockets or
    signals to processes outside (ABI >= 6). Raises OSError when the kernel refuses."""
    import ctypes

    class RulesetAttr(ctypes.Structure):
        _fields_ = [
            ("handled_access_fs", ctypes.c_uint64),
            ("handled_access_net", ctypes.c_uint64),
            ("scoped", ctypes.c_uint64),
        ]

    class PathBeneathAttr(ctypes.Structure):
        _pack_ = 1  # the kernel's struct is __attribute__((packed))
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    libc = _libc()
    attr = RulesetAttr(write_rights(abi), 0, 0)
    size = 8
    if abi >= 4:
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        size = 24
    ruleset = _syscall(libc, SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), size, 0)
    try:
        file_rights = FS_WRITE_FILE | (FS_TRUNCATE if abi >= 3 else 0)
        for path, rights in ((writable_dir, attr.handled_access_fs), ("/dev/null", file_rights)):
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = PathBeneathAttr(rights, fd)
                _syscall(
                    libc,
                    SYS_LANDLOCK_ADD_RULE,
                    ruleset,
                    LANDLOCK_RULE_PATH_BENEATH,
                    ctypes.byref(rule),
                    0,
                )
            finally:
                os.close(fd)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(e)}")
        _syscall(libc, SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0)
    finally:
        os.close(ruleset)


def _main():
    write, exit_, fd = os.write, os._exit, int(sys.argv[2])
    nonce = sys.stdin.readline().strip().encode()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    with open(sys.argv[1], encoding="utf-8") as fh:
        source = fh.read()
    if "--landlock" in sys.argv:
        abi = int(sys.argv[sys.argv.index("--landlock") + 1])
        try:
            landlock_confine(os.getcwd(), abi)
        except OSError as e:
            sys.stderr.write(f"codetune-sandbox: Landlock (ABI {abi}) failed: {e}\n")
            exit_(EXIT_SANDBOX)
    g = {"__name__": "__main__", "__file__": "program.py", "__builtins__": __builtins__}
    try:
        exec(compile(source, "program.py", "exec"), g)
    except AssertionError:
        traceback.print_exc()
        exit_(EXIT_ASSERTION)
    except BaseException:
        # SystemExit included: a program that exits before its tests finish did not pass.
        traceback.print_exc()
        exit_(EXIT_EXCEPTION)
    write(fd, nonce)
    exit_(0)


if __name__ == "__main__":
    _main()
