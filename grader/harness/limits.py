"""What a check's process may do: resource limits, ``prctl`` flags, dropping root
privileges, and ending every process a check left behind.  Standard library only."""

from __future__ import annotations

import math
import os
import signal
import time


def apply_limits(limits: dict, baseline_vm: int) -> None:
    import resource

    def setlimit(which, value):
        try:
            soft, hard = resource.getrlimit(which)
            value = int(value)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value if hard == resource.RLIM_INFINITY else hard))
        except (ValueError, OSError):
            pass

    setlimit(resource.RLIMIT_CORE, 0)
    if limits.get("memory_mb"):
        setlimit(resource.RLIMIT_AS, baseline_vm + int(limits["memory_mb"]) * (1 << 20))
    if limits.get("cpu_seconds"):
        setlimit(resource.RLIMIT_CPU, math.ceil(limits["cpu_seconds"]))
    if limits.get("file_bytes") is not None:
        setlimit(resource.RLIMIT_FSIZE, limits["file_bytes"])
    if limits.get("nproc"):
        setlimit(resource.RLIMIT_NPROC, limits["nproc"])


def prctl(option: int, value: int) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except Exception:  # noqa: BLE001 - not Linux, or no libc
        return False


PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38


def drop_privileges(run_as) -> None:
    """Become the unprivileged ``run_as = [uid, gid]`` (all of real/effective/saved ids, no
    supplementary groups, no capabilities), and never gain privileges again (no set-uid
    programs).  Raises ``PermissionError`` if any id is still privileged afterwards."""
    if run_as:
        uid, gid = int(run_as[0]), int(run_as[1])
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
            raise PermissionError("the ids did not change")
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    if 0 in os.getresuid():
        raise PermissionError("student code would run as root")


def vm_size() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def kill_descendants(rounds: int = 50) -> None:
    """SIGKILL every process below this one and reap it.

    The zygote is a child subreaper, so a daemon that left its process group
    and session (``setsid()`` and a double fork) is still reparented here and
    found; repeated because a process may fork while we look."""
    me = os.getpid()
    for _ in range(rounds):
        parents: dict[int, int] = {}
        try:
            names = os.listdir("/proc")
        except OSError:
            return
        for name in names:
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
                parents[int(name)] = int(stat[stat.rindex(b")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                continue
        below, frontier = set(), {me}
        while frontier:
            frontier = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in below}
            below |= frontier
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        while True:  # reap (children of a subreaper)
            try:
                done, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if done == 0:
                break
        if not below:
            return
        time.sleep(0.01)
