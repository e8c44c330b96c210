"""The zygote and its children: the process side of the harness.

The grader (parent, trusted) starts one *zygote* per submission (:mod:`grader.harness.boot`
loads this package from source inside the sandbox).  The zygote imports torch once
(3-5 s) and then, for every check, forks a *child* that

1. puts itself in its own process group, reads ``/dev/null`` as stdin and
   sends stdout/stderr to a pipe the zygote reads (with a byte cap),
2. applies resource limits (address space, CPU seconds, file size, no core),
3. executes the submission's source in a fresh namespace with an import hook
   that refuses ``solutions`` and ``grader`` (this package included),
4. runs one procedure (:mod:`grader.harness.procedures`) and writes its result, as
   ``torch.save`` bytes of plain tensors and containers, to a pipe.

The zygote enforces the wall-clock limit (kills the child's process group),
caps output and result sizes and reports to the parent (:mod:`grader.harness.wire`).
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

from grader.harness.limits import (
    PR_SET_CHILD_SUBREAPER,
    PR_SET_DUMPABLE,
    PR_SET_PDEATHSIG,
    apply_limits,
    drop_privileges,
    kill_descendants,
    prctl,
    vm_size,
)
from grader.harness.oracle import Oracle
from grader.harness.procedures import run_procedure
from grader.harness.scratch import clear_scratch, tree_bytes
from grader.harness.standins import given_classes
from grader.harness.submission import BLOCKED_PACKAGES, ImportBlocker, describe_error, forbid_callables, load_submission
from grader.harness.wire import FRAME, FrameBuffer, dumps, loads, read_frame, send_header, write_frame


def child_main(job: dict, result_fd: int, oracle_fds, baseline_vm: int) -> None:
    """Body of the forked child; never returns."""
    status = 0
    try:
        os.setpgid(0, 0)
        try:
            drop_privileges(job.get("run_as"))
        except OSError as error:
            # Refuse rather than run the submission with the grader's privileges.
            write_frame(result_fd, dumps({"ok": False, "stage": "setup", "error_type": "SandboxRefused",
                                          "error": f"could not drop root privileges ({error}); student code never runs as root"}))
            os._exit(71)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after the uid change (which clears it): dies with the zygote
        limits = dict(job.get("limits", {}))
        if not job.get("run_as"):
            limits.pop("nproc", None)  # the grader's own uid: its other processes would count too
        apply_limits(limits, baseline_vm)
        workdir = job.get("workdir")
        if workdir:
            try:
                os.makedirs(workdir, exist_ok=True)
                os.chdir(workdir)
            except OSError as error:  # the grader's fault (a scratch folder the uid cannot reach)
                write_frame(result_fd, dumps({"ok": False, "stage": "setup", "error_type": "SandboxRefused",
                                              "error": f"the sandbox's scratch folder is not usable: {error}"}))
                os._exit(71)
        if job.get("lib_dir"):
            sys.path.insert(0, job["lib_dir"])
            for name in [n for n in sys.modules if n == "data_utils" or n.startswith("data_utils.")]:
                del sys.modules[name]
        blocker = ImportBlocker()
        sys.meta_path.insert(0, blocker)
        for name in list(sys.modules):
            if name.split(".")[0] in BLOCKED_PACKAGES:
                del sys.modules[name]
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
        import torch

        torch.set_num_threads(int(job.get("threads", 1)))
        load_warnings: list = []
        try:
            ns = load_submission(job["source"], warnings=load_warnings)
            # Imports refused while loading (top level) gained nothing; only
            # attempts made while the checked code runs count against it.
            del blocker.attempts[:]
        except BaseException as error:  # noqa: BLE001 - student code can raise anything, SystemExit included
            record = {"ok": False, "stage": "load", **describe_error(error)}
        else:
            oracle = Oracle(*oracle_fds)
            for name in job.get("oracle", []):
                ns[name] = oracle.proxy(name)
            # The parent sends a given class only for names the submission
            # lacks or left as the release's stub: the stub must not win.
            for name, cls in given_classes(job.get("given_sources") or {}).items():
                ns[name] = cls
            forbidden = job["spec"].get("forbidden") or {}
            if forbidden.get("names"):
                forbid_callables(ns, list(forbidden["names"]), str(forbidden.get("function", "")))
            record = run_procedure(ns, job["spec"])
            if job["spec"].get("op") == "load" and record.get("ok"):
                record["value"]["warnings"] = load_warnings
        record["blocked_imports"] = list(blocker.attempts)
        record["imported_blocked"] = sorted({n.split(".")[0] for n in sys.modules
                                             if n.split(".")[0] in BLOCKED_PACKAGES and sys.modules[n] is not None})
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - closed or hostile streams: the result still goes out
            pass
        try:
            payload = dumps(record)
        except BaseException as error:  # noqa: BLE001 - a hostile result object can raise anything
            payload = dumps({"ok": False, "error_type": "BadReturn", "error": f"result could not be serialised: {error}"})
        write_frame(result_fd, payload)
    except BaseException:  # noqa: BLE001 - whatever happened, the child reports and exits
        status = 70
    os._exit(status)


def run_job(job: dict, ctl_in: int, ctl_out: int, baseline_vm: int, counter: int) -> None:
    limits = job.get("limits", {})
    out_r, out_w = os.pipe()
    res_r, res_w = os.pipe()
    orq_r, orq_w = os.pipe()  # child -> zygote oracle requests
    orp_r, orp_w = os.pipe()  # zygote -> child oracle replies
    if job.get("workdir") is None and job.get("scratch"):
        job["workdir"] = os.path.join(job["scratch"], f"job-{counter}")
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            for fd in (out_r, res_r, orq_r, orp_w, ctl_in, ctl_out):
                os.close(fd)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out_w, 1)
            os.dup2(out_w, 2)
            os.close(out_w)
        finally:
            child_main(job, res_w, (orq_w, orp_r), baseline_vm)
    for fd in (out_w, res_w, orq_w, orp_r):
        os.close(fd)
    for fd in (out_r, res_r, orq_r):
        os.set_blocking(fd, False)

    wall = float(limits.get("wall_seconds", 60))
    out_cap = int(limits.get("output_bytes", 1 << 16))
    out_hard = int(limits.get("output_hard_bytes", 16 << 20))
    result_cap = int(limits.get("result_bytes", 512 << 20))
    stdout_head = bytearray()
    stdout_total = 0
    result = bytearray()
    oracle_buffer = FrameBuffer(256 << 20)
    reason = None
    open_fds = {out_r, res_r, orq_r}
    exited, exit_status = False, None
    deadline = started + wall
    oracle_seconds = 0.0
    # Oracle answers are computed by the grader; their time is added to the deadline only up to
    # this budget (a loop of oracle calls must still end).
    oracle_budget = float(limits.get("oracle_seconds", 30.0))
    scratch_cap = limits.get("scratch_bytes")
    keep = job.get("lib_dir")
    next_disk_check = started
    while True:
        if not exited:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                exited, exit_status = True, status
        if exited and res_r not in open_fds:
            break
        if exited:
            # The child is gone; drain what is left without waiting for
            # grandchildren that may hold the pipes open.
            for fd in list(open_fds):
                try:
                    while True:
                        chunk = os.read(fd, 1 << 20)
                        if not chunk:
                            break
                        if fd == res_r:
                            result += chunk
                        elif fd == out_r:
                            stdout_total += len(chunk)
                            if len(stdout_head) < out_cap:
                                stdout_head += chunk[: out_cap - len(stdout_head)]
                except (BlockingIOError, OSError):
                    pass
            break
        now = time.monotonic()
        extended = deadline + min(oracle_seconds, oracle_budget)
        if now > extended:
            reason = "timeout"
            break
        if scratch_cap and now >= next_disk_check and job.get("scratch"):
            next_disk_check = now + 0.1
            if tree_bytes(job["scratch"], skip=keep) > int(scratch_cap):
                reason = "disk_limit"
                break
        readable, _, _ = select.select(list(open_fds), [], [], min(0.05, max(0.0, extended - now)))
        for fd in readable:
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                open_fds.discard(fd)
                continue
            if fd == out_r:
                stdout_total += len(chunk)
                if len(stdout_head) < out_cap:
                    stdout_head += chunk[: out_cap - len(stdout_head)]
                if stdout_total > out_hard:
                    reason = "output_limit"
            elif fd == res_r:
                result += chunk
                if len(result) > result_cap:
                    reason = "result_limit"
            elif fd == orq_r:
                for frame in oracle_buffer.feed(chunk):
                    asked = time.monotonic()
                    send_header(ctl_out, {"type": "oracle"}, frame)
                    reply = read_frame(ctl_in)
                    oracle_seconds += time.monotonic() - asked
                    try:
                        write_frame(orp_w, reply)
                    except OSError:
                        pass
                if oracle_buffer.overflow:
                    reason = "oracle_limit"
        if reason:
            break
    if reason or not exited:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        _, exit_status = os.waitpid(pid, 0)
    try:
        os.killpg(pid, signal.SIGKILL)  # grandchildren left behind
    except OSError:
        pass
    kill_descendants()  # and those that left the process group or session
    if not reason and scratch_cap and job.get("scratch") and tree_bytes(job["scratch"], skip=keep) > int(scratch_cap):
        reason = "disk_limit"
    clear_scratch(job.get("scratch"), keep)
    for fd in (out_r, res_r, orq_r, orp_w):
        try:
            os.close(fd)
        except OSError:
            pass
    payload = None
    if not reason and len(result) >= FRAME.size:
        (length,) = FRAME.unpack(bytes(result[:FRAME.size]))
        if len(result) == FRAME.size + length:
            payload = bytes(result[FRAME.size:])
    header = {
        "type": "done",
        "reason": reason,
        "exit_code": os.WEXITSTATUS(exit_status) if exit_status is not None and os.WIFEXITED(exit_status) else None,
        "signal": os.WTERMSIG(exit_status) if exit_status is not None and os.WIFSIGNALED(exit_status) else None,
        "stdout": stdout_head.decode("utf-8", errors="replace"),
        "stdout_bytes": stdout_total,
        "seconds": time.monotonic() - started,
        "has_result": payload is not None,
    }
    send_header(ctl_out, header, payload if payload is not None else b"")


#: Modules imported once by the zygote: where the children run as another uid than the one
#: that installed Python, these stay importable even if the installation is not readable.
PRELOAD = ("copy", "random", "itertools", "functools", "collections", "collections.abc", "typing", "dataclasses",
           "statistics", "heapq", "bisect", "operator", "re", "json", "warnings", "contextlib", "numbers", "fractions",
           "decimal", "string", "textwrap", "abc", "enum", "pathlib", "shutil", "tempfile", "pickle", "array", "queue",
           "glob", "fnmatch", "csv", "ctypes", "resource", "pprint", "inspect", "types", "weakref", "traceback", "linecache",
           "ast", "__future__", "torch.nn.init", "torch.nn.functional", "torch.optim", "torch.utils.data",
           "torchvision.models", "torchvision.ops.boxes", "torchvision.transforms", "numpy.linalg", "numpy.random")


def zygote_main(ctl_in: int, ctl_out: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Orphans of a check (a setsid() daemon) are reparented here and killed after the check;
    # not dumpable: processes of the same uid cannot open /proc/<zygote>/fd (the control pipes).
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    prctl(PR_SET_DUMPABLE, 0)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the grader died (SIGKILL, a batch stopped): so does the sandbox
    import importlib

    import numpy  # noqa: F401  (preloaded once in the zygote, for every check)
    import torch
    import torchvision.ops  # noqa: F401  (preloaded once in the zygote, for every check)

    try:  # notebooks import pyplot; loading it once here saves time in every check
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # preloaded once in the zygote
    except Exception:  # noqa: BLE001 - optional
        pass
    for module in PRELOAD:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - optional
            pass
    torch.set_num_threads(1)
    baseline = vm_size()
    send_header(ctl_out, {"type": "ready", "vm_size": baseline, "pid": os.getpid(), "torch": torch.__version__})
    counter = 0
    while True:
        try:
            frame = read_frame(ctl_in)
        except EOFError:
            break
        job = loads(frame)
        counter += 1
        run_job(job, ctl_in, ctl_out, baseline, counter)
    os._exit(0)

