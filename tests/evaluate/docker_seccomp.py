"""Run a command under Docker's default seccomp profile, as a container's root would.

    python docker_seccomp.py PROFILE.json -- COMMAND ...

Translates Docker's ``profiles/seccomp/default.json`` into a libseccomp filter the way
Docker does for a container with the default capability set (entries that need a capability
outside that set, CAP_SYS_ADMIN among them, are left out; x86_64 only), loads it and execs
COMMAND. Run it with the bounding set reduced to Docker's capabilities (``setpriv``) and the
process is as restricted as root in a SageMaker container: bubblewrap cannot create
namespaces there.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import sys

import pyseccomp as sc

# moby's oci/caps/defaults.go
DOCKER_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)  # fmt: skip
ARCH = "amd64"
OPS = {"SCMP_CMP_EQ": sc.EQ, "SCMP_CMP_NE": sc.NE, "SCMP_CMP_MASKED_EQ": sc.MASKED_EQ}


def _applies(entry: dict) -> bool:
    inc, exc = entry.get("includes") or {}, entry.get("excludes") or {}
    if inc.get("caps") and not set(inc["caps"]) <= set(DOCKER_CAPS):
        return False
    if inc.get("arches") and ARCH not in inc["arches"]:
        return False
    if inc.get("minKernel"):
        want = tuple(int(x) for x in inc["minKernel"].split("."))
        have = tuple(int(x) for x in platform.release().split("-")[0].split(".")[:2])
        if have < want:
            return False
    if exc.get("caps") and set(exc["caps"]) & set(DOCKER_CAPS):
        return False
    return not (exc.get("arches") and ARCH in exc["arches"])


def build(profile: dict) -> sc.SyscallFilter:
    """The filter Docker would load for this profile (default action: EPERM)."""
    default = profile.get("defaultErrnoRet", errno.EPERM)
    f = sc.SyscallFilter(sc.ERRNO(default))
    for entry in profile["syscalls"]:
        if not _applies(entry):
            continue
        action = entry["action"]
        act = sc.ALLOW if action == "SCMP_ACT_ALLOW" else sc.ERRNO(entry.get("errnoRet") or 1)
        args = [
            sc.Arg(a["index"], OPS[a["op"]], a["value"], a.get("valueTwo", 0))
            for a in entry.get("args") or []
        ]
        for name in entry["names"]:
            try:
                f.add_rule(act, name, *args)
            except OSError:  # a name this libseccomp does not know on x86_64
                continue
    return f


def main(argv: list[str]) -> None:
    profile, sep, command = argv[1], argv[2], argv[3:]
    if sep != "--" or not command:
        raise SystemExit(__doc__)
    with open(profile, encoding="utf-8") as fh:
        build(json.load(fh)).load()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv)
