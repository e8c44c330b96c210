"""Run untrusted submission code in a separate, limited process.

Two isolation levels, chosen by :func:`detect_mode` (or forced with
``mode=``/``GRADER_SANDBOX``):

``bwrap`` (preferred; Debian/Ubuntu package ``bubblewrap``)
    The zygote (see :mod:`grader.harness.zygote`) runs under bubblewrap with every
    namespace unshared: no network, its own PID namespace (it cannot see or
    signal the grader), a read-only view of only the system directories, the
    Python installation and ``data_utils`` -- ``solutions``, ``grader``, the
    submissions, the rubric and the home directory do not exist inside -- and
    one writable scratch directory (removed afterwards).
``fallback`` (no bubblewrap, or it cannot create namespaces, e.g. in some
    containers)
    The same zygote without bubblewrap: resource limits, a scrubbed
    environment, a scratch working directory (its total size watched), stdin
    from ``/dev/null`` and an import hook refusing ``solutions``/``grader``.
    Known limits, stated plainly: the code *can* read world-readable files
    (the reference too, unless it is made unreadable to others, as the
    Gradescope bundle does), write to the host's ``/tmp``, and use the network.

Student code never runs as root: when the grader is root, each sandbox leases
an unprivileged uid (:class:`UidLease`) and every child drops to it before the
submission is loaded (the zygote stays root, so the children cannot signal or
inspect it); all processes of that uid are killed after every check.  Without
root the code runs as the grader's own (unprivileged) user.
    Results are still compared in the grader's process and decoded with
    ``torch.load(weights_only=True)``, so the score cannot be forged without
    the reference; use ``bwrap`` (or a container per submission) for a class.

In both modes every check runs in a fresh forked child with: a wall-clock
limit (the zygote kills the child's process group), ``RLIMIT_AS`` (memory
beyond the interpreter's baseline), ``RLIMIT_CPU``, ``RLIMIT_FSIZE`` (file
writes), no core dumps, an output cap (the first 64 KiB are kept; past
16 MiB the child is killed) and a result-size cap.
"""

from __future__ import annotations

import io
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from grader import _given
from grader.harness import boot, wire
from grader.rubric import default_limits

REPO_ROOT = Path(__file__).resolve().parents[1]
MODES = ("auto", "bwrap", "fallback")

#: Default per-check limits: ``[limits.check]`` of ``grader/rubric.toml``, where each is explained
#: (overridden per check and by the rubric a grading run loads).
DEFAULT_LIMITS = default_limits()

#: Size of the private ``/tmp`` inside bubblewrap (a tmpfs: memory outside RLIMIT_AS).
BWRAP_TMP_BYTES = 64 << 20
#: Size of the scratch folder inside bubblewrap (a tmpfs too, so that a job cannot fill the host's disk).
BWRAP_SCRATCH_BYTES = 256 << 20
#: Files of ``/etc`` the interpreter needs (the dynamic loader's cache, time zone, name service
#: switch); ``/etc`` is never bound whole (``/etc/shadow`` and friends stay outside).
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf", "host.conf", "mime.types")
#: Unprivileged uids given to student code when the grader runs as root (no passwd entry
#: needed; each sandbox holds one, so sandboxes cannot signal each other).
SANDBOX_UID_BASE = int(os.environ.get("GRADER_SANDBOX_UID_BASE", "61000"))
SANDBOX_UID_COUNT = 1000


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the submission)."""


@dataclass
class Outcome:
    """What one job in the sandbox produced.

    ``status``: ``ok`` (the procedure returned), ``error`` (the submission
    raised; see ``error_type``/``error``), ``timeout``, ``output_limit``,
    ``crashed`` (the child died without a result: ``os._exit``, a signal,
    the memory limit hit inside native code, ...), ``bad_result`` (the result
    could not be decoded as plain data) or ``sandbox_error``.
    """

    status: str
    value: Any = None
    error_type: str | None = None
    error: str | None = None
    traceback: str = ""
    stdout: str = ""
    stdout_bytes: int = 0
    seconds: float = 0.0
    exit_code: int | None = None
    signal: int | None = None
    blocked_imports: list[str] = field(default_factory=list)
    stage: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def describe(self) -> str:
        """One line for a student: what went wrong (empty when ok)."""
        if self.status == "ok":
            return ""
        if self.status == "error":
            where = " while loading your code" if self.stage == "load" else ""
            text = f"{self.error_type}{where}: {self.error}"
            if self.traceback:
                text += "\n" + self.traceback
            return text
        if self.status == "timeout":
            return f"time limit exceeded ({self.seconds:.0f} s): an infinite loop, or code far too slow (use vectorised tensor operations)"
        if self.status == "output_limit":
            return f"output limit exceeded: your code printed more than {DEFAULT_LIMITS['output_hard_bytes'] >> 20} MiB"
        if self.status == "crashed":
            if self.error and self.error != "the sandbox process died":
                return self.error  # the zygote's reason (e.g. the disk limit)
            if self.error == "the sandbox process died":
                return "the sandbox was killed while running your code (did it signal another process?)"
            if self.signal == signal.SIGXCPU:
                return "CPU time limit exceeded"
            if self.signal == signal.SIGXFSZ:
                return "file size limit exceeded: your code wrote a large file"
            if self.signal is not None:
                return f"your code's process was killed by signal {signal.Signals(self.signal).name} (memory limit, crash or self-kill)"
            return f"your code's process exited (exit code {self.exit_code}) before returning a result (os._exit or a crash)"
        if self.status == "bad_result":
            return f"the result could not be read back: {self.error}"
        return f"grader sandbox problem: {self.error}"


# ---------------------------------------------------------------------------
# Mode detection
# ---------------------------------------------------------------------------

_PROBE_CACHE: dict[str, tuple[bool, str]] = {}


def _bind_paths() -> list[Path]:
    """Directories the sandbox needs read-only: Python, its packages, data_utils."""
    paths: list[Path] = []
    for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        paths.append(Path(p))
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        resolved = Path(entry).resolve()
        if resolved == REPO_ROOT or REPO_ROOT in resolved.parents and not str(resolved).startswith(str(Path(sys.prefix).resolve())):
            continue  # the repository itself is never bound whole
        paths.append(resolved)
    try:
        import data_utils

        paths.extend(Path(p).resolve() for p in data_utils.__path__)
    except ImportError:
        pass
    executable = Path(sys.executable)
    paths.append(executable.resolve().parent)
    # keep unique, drop paths nested in others
    unique: list[Path] = []
    for p in sorted({p.resolve() if p.exists() else p for p in paths}, key=lambda x: len(x.parts)):
        if not p.exists():
            continue
        if any(p == u or u in p.parents for u in unique):
            continue
        if p in (Path("/"),) or p == REPO_ROOT:
            continue
        unique.append(p)
    return unique


def bwrap_command(scratch: Path, *, cuda: bool = False, extra_ro: tuple[Path, ...] = (), as_root: bool | None = None) -> list[str]:
    """The bubblewrap prefix for a sandbox whose only writable places are ``scratch`` and ``/tmp``.

    As root (``as_root``, default: the grader's effective uid is 0) no user
    namespace is created: the zygote keeps only ``CAP_SETUID``/``CAP_SETGID``/
    ``CAP_KILL``/``CAP_DAC_OVERRIDE``/``CAP_FOWNER`` and each child drops to an unprivileged host uid before the
    submission runs (a user namespace would map host root into the sandbox, and
    root-owned files would be the student's own).  Otherwise the sandbox runs in
    a user namespace as uid/gid 65534 (the grader's unprivileged uid outside).
    ``/tmp`` and the scratch folder are size-limited tmpfs mounts.
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxError("bwrap is not installed")
    as_root = (os.geteuid() == 0) if as_root is None else as_root
    cmd = [bwrap, "--die-with-parent", "--new-session"]
    if as_root:
        cmd += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_KILL",
                # to empty the scratch folder of files the children (another uid) left there
                "--cap-add", "CAP_DAC_OVERRIDE", "--cap-add", "CAP_FOWNER"]
    else:
        cmd += ["--unshare-all", "--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY), "--cap-drop", "ALL"]
    for system_dir in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.exists(system_dir):
            cmd += ["--ro-bind", system_dir, system_dir] if not os.path.islink(system_dir) else ["--symlink", os.readlink(system_dir), system_dir]
    cmd += ["--perms", "0755", "--dir", "/etc"]
    for name in ETC_FILES:
        path = os.path.join("/etc", name)
        if os.path.exists(path):
            cmd += ["--ro-bind", path, path]
    # /tmp, /proc and /dev first: a bind below /tmp (a venv or a bundle there) must not be hidden by the tmpfs.
    cmd += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(BWRAP_TMP_BYTES), "--tmpfs", "/tmp"]
    binds = [(path, path) for path in [*_bind_paths(), *extra_ro]
             if not str(path).startswith(("/usr", "/bin", "/sbin", "/lib", "/etc"))]
    # A virtual environment reached through a symlink (``.venv -> elsewhere``): the interpreter is
    # started by its unresolved path, so that path must exist inside too.
    prefix = Path(os.path.abspath(sys.prefix))
    if prefix != prefix.resolve() and prefix.resolve().is_dir():
        binds.append((prefix.resolve(), prefix))
    made: set[str] = {"/", "/tmp", "/usr", "/etc", "/proc", "/dev"}
    for source, dest in binds:
        # The folders above a bind are created traversable (bwrap would make them 0700 under a
        # strict umask, and the unprivileged children could not reach Python or data_utils).
        for parent in reversed(Path(dest).parents):
            if str(parent) not in made:
                made.add(str(parent))
                cmd += ["--perms", "0755", "--dir", str(parent)]
        cmd += ["--ro-bind", str(source), str(dest)]
    if os.path.isdir("/sys"):
        cmd += ["--ro-bind", "/sys", "/sys"]
    # The scratch folder is a size-limited tmpfs (never the host's disk); its ``lib`` (the
    # data_utils link) is bound over it from the host.
    cmd += ["--perms", "1777", "--size", str(BWRAP_SCRATCH_BYTES), "--tmpfs", str(scratch)]
    if (scratch / "lib").is_dir():
        cmd += ["--ro-bind", str(scratch / "lib"), str(scratch / "lib")]
    if cuda:
        for dev in sorted(Path("/dev").glob("nvidia*")):
            cmd += ["--dev-bind", str(dev), str(dev)]
        if os.path.isdir("/dev/dri"):
            cmd += ["--dev-bind", "/dev/dri", "/dev/dri"]
    cmd += ["--remount-ro", "/", "--chdir", str(scratch)]
    return cmd


def probe_bwrap() -> tuple[bool, str]:
    """Can bubblewrap start this Python with torch here?  ``(ok, reason)``; cached."""
    if "bwrap" in _PROBE_CACHE:
        return _PROBE_CACHE["bwrap"]
    if shutil.which("bwrap") is None:
        result = (False, "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)")
    else:
        with tempfile.TemporaryDirectory(prefix="grader-probe-") as scratch:
            cmd = bwrap_command(Path(scratch)) + [sys.executable, "-I", "-c", "import sys; print('sandbox-ok')"]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=_scrubbed_env(Path(scratch), 1, False))
                ok = proc.returncode == 0 and "sandbox-ok" in proc.stdout
                result = (ok, "" if ok else f"bwrap cannot create a sandbox here: {proc.stderr.strip()[:300]}")
            except (OSError, subprocess.TimeoutExpired) as error:
                result = (False, f"bwrap failed: {error}")
    _PROBE_CACHE["bwrap"] = result
    return result


def detect_mode(requested: str | None = None) -> tuple[str, str]:
    """``(mode, note)``: ``bwrap`` when it works, else ``fallback`` with the reason."""
    requested = requested or os.environ.get("GRADER_SANDBOX", "auto")
    if requested not in MODES:
        raise ValueError(f"sandbox mode must be one of {MODES}, not {requested!r}")
    if requested == "fallback":
        return "fallback", "fallback isolation (resource limits, scrubbed environment, import hook): requested"
    ok, reason = probe_bwrap()
    if ok:
        return "bwrap", "bubblewrap: no network, own PID namespace, read-only system, no access to the reference or grader"
    if requested == "bwrap":
        raise SandboxError(f"sandbox mode 'bwrap' requested but unavailable: {reason}")
    return "fallback", f"fallback isolation (resource limits, scrubbed environment, import hook): {reason}"


NOBODY = 65534


def _readable_by_others(path: Path) -> bool:
    """Whether a user with no special rights can reach ``path`` (every folder above it searchable)."""
    import stat

    try:
        for folder in [*reversed(path.resolve().parents), path.resolve()]:
            if not os.stat(folder).st_mode & stat.S_IXOTH:
                return False
        return bool(os.stat(path).st_mode & stat.S_IROTH)
    except OSError:
        return False


class UidLease:
    """An unprivileged uid/gid reserved for one sandbox while the grader runs as root.

    Student code never runs as root: the zygote's children drop to this uid
    before the submission is loaded.  The uid has no passwd entry and no
    files; each sandbox holds its own (an exclusive ``flock`` on a file in a
    root-only folder), so that every process left by a check can be found by
    its uid and killed, and sandboxes graded in parallel cannot signal each
    other.  ``RLIMIT_NPROC`` on it bounds fork bombs.
    """

    def __init__(self):
        import fcntl
        import pwd

        folder = Path(os.environ.get("GRADER_UID_LOCKS", "/run/grader-uids" if os.path.isdir("/run") else "/tmp/grader-uids"))
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        for uid in range(SANDBOX_UID_BASE, SANDBOX_UID_BASE + SANDBOX_UID_COUNT):
            try:
                pwd.getpwuid(uid)
                continue  # a real account: never borrow it
            except KeyError:
                pass
            fd = os.open(folder / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self.uid = self.gid = uid
            self._fd = fd
            kill_uid(uid)  # anything a crashed earlier grader left behind
            return
        raise SandboxError(f"no free sandbox uid in {SANDBOX_UID_BASE}..{SANDBOX_UID_BASE + SANDBOX_UID_COUNT - 1}: "
                           "too many sandboxes at once (or set GRADER_SANDBOX_UID_BASE)")

    def release(self) -> None:
        if getattr(self, "_fd", None) is not None:
            kill_uid(self.uid)
            os.close(self._fd)
            self._fd = None


def processes_of_uid(uid: int) -> list[int]:
    """Pids whose real or effective uid is ``uid`` (read from ``/proc``)."""
    pids = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return pids
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Uid:"):
                        ids = [int(x) for x in line.split()[1:3]]
                        if uid in ids:
                            pids.append(int(entry))
                        break
        except (OSError, ValueError):
            continue
    return pids


def kill_uid(uid: int, rounds: int = 50) -> None:
    """SIGKILL every process of ``uid`` (repeated: a process may fork while we look)."""
    for _ in range(rounds):
        pids = [p for p in processes_of_uid(uid) if p != os.getpid()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)


def _scrubbed_env(scratch: Path, threads: int, cuda: bool) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(scratch),
        "TMPDIR": str(scratch),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TORCH_HOME": str(scratch / "torch"),
        "MPLCONFIGDIR": str(scratch / "mpl"),
        "XDG_CACHE_HOME": str(scratch / "cache"),
        "PYTORCH_NVML_BASED_CUDA_CHECK": "1",
        "USER": "student",
        "LOGNAME": "student",
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0") if cuda else "",
    }
    return env


# ---------------------------------------------------------------------------
# The sandbox
# ---------------------------------------------------------------------------

OracleHandler = Callable[[str, list, dict], Any]


class Sandbox:
    """A zygote process for one submission; :meth:`run` executes one job.

    Use as a context manager.  The zygote starts lazily (``start()`` starts it
    early, so that it boots while the grader prepares the references).
    """

    def __init__(self, mode: str | None = None, *, threads: int = 1, cuda: bool | None = None,
                 extra_ro: tuple[Path, ...] = (), limits: dict | None = None):
        self.mode, self.mode_note = detect_mode(mode)
        self.threads = max(1, int(threads))
        self.cuda = torch.cuda.is_available() if cuda is None else cuda
        self.extra_ro = tuple(Path(p) for p in extra_ro)
        self.limits = {**DEFAULT_LIMITS, **(limits or {})}
        self.proc: subprocess.Popen | None = None
        self.scratch: Path | None = None
        self._ctl_in = self._ctl_out = None
        self._buffer = bytearray()
        self.ready: dict | None = None
        self.restarts = 0
        self.boot_seconds = 0.0
        # Student code never runs as root: as root, every child drops to a uid of its own.
        self.lease: UidLease | None = UidLease() if os.geteuid() == 0 else None
        self.mode_note += "; " + self.isolation()

    def isolation(self) -> str:
        """Which user student code runs as, and what bounds its space (for the report)."""
        if self.lease is not None:
            who = f"student code ran as uid {self.lease.uid} (unprivileged, no account; its processes are killed after each check)"
        else:
            who = f"student code ran as the grader's user (uid {os.geteuid()}, not root)"
        if self.lease is not None and self.mode == "fallback" and not _readable_by_others(Path(sys.base_prefix) / "lib"):
            who += ("; the Python installation is not readable by that uid, so only the modules the sandbox "
                    "preloads can be imported")
        if self.mode == "bwrap":
            space = (f"/tmp and the scratch folder are tmpfs of {BWRAP_TMP_BYTES >> 20} and {BWRAP_SCRATCH_BYTES >> 20} MiB; "
                     "only a few files of /etc are visible")
        else:
            space = (f"scratch folder capped at {int(self.limits['scratch_bytes']) >> 20} MiB; the code can read world-readable "
                     "files and use the network")
        return f"{who}; {space}"

    # -- lifecycle --------------------------------------------------------
    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self._cleanup_process()
        parent = None
        if self.lease is not None and not _readable_by_others(Path(tempfile.gettempdir())):
            parent = "/tmp"  # the children (another uid) must reach the scratch folder
        self.scratch = Path(tempfile.mkdtemp(prefix="grader-sandbox-", dir=parent))
        os.chmod(self.scratch, 0o700)
        # The only package of this project submissions may import: data_utils,
        # reached through a directory that holds nothing else (whatever the
        # venv's editable-install mapping says).
        self.lib_dir = self.scratch / "lib"
        self.lib_dir.mkdir()
        try:
            import data_utils

            os.symlink(Path(list(data_utils.__path__)[0]).resolve(), self.lib_dir / "data_utils")
        except (ImportError, OSError):
            pass
        if self.lease is not None:
            # The children (uid of the lease) work in the scratch folder; the zygote stays root.
            os.chown(self.scratch, self.lease.uid, self.lease.gid)
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        python = boot.zygote_command(sys.executable, f"{to_child_r},{from_child_w}")
        cmd = (bwrap_command(self.scratch, cuda=self.cuda, extra_ro=self.extra_ro) + python) if self.mode == "bwrap" else python
        env = _scrubbed_env(self.scratch, self.threads, self.cuda)
        self._started_at = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            pass_fds=(to_child_r, from_child_w), env=env, cwd=self.scratch, start_new_session=True,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._ctl_in, self._ctl_out = to_child_w, from_child_r
        self._buffer = bytearray()
        self.ready = None

    def _wait_ready(self, timeout: float = 180.0) -> None:
        if self.ready is not None:
            return
        try:
            header = self._read_json(time.monotonic() + timeout)
        except ProtocolError as error:  # before any submission code ran: the sandbox is broken
            self._cleanup_process()
            raise SandboxError(f"the sandbox did not start: {error}") from None
        if header is None or header.get("type") != "ready":
            stderr = self._stderr_tail()
            self._cleanup_process()
            raise SandboxError(f"the sandbox did not start: {stderr or header}")
        self.ready = header
        self.boot_seconds = time.monotonic() - self._started_at

    def close(self) -> None:
        self._cleanup_process()
        if self.lease is not None:
            self.lease.release()
            self.lease = None

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _stderr_tail(self) -> str:
        if self.proc is None or self.proc.stderr is None:
            return ""
        try:
            os.set_blocking(self.proc.stderr.fileno(), False)
            data = self.proc.stderr.read() or b""
        except (OSError, ValueError):
            data = b""
        return data.decode("utf-8", "replace")[-2000:]

    def _cleanup_process(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            if self.proc.stderr:
                self.proc.stderr.close()
        for fd in (self._ctl_in, self._ctl_out):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._ctl_in = self._ctl_out = None
        self.proc = None
        if self.lease is not None:
            kill_uid(self.lease.uid)  # whatever outlived the zygote (a setsid() daemon in the fallback)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    # -- framing ----------------------------------------------------------
    def _read_exact(self, n: int, deadline: float) -> bytes | None:
        while len(self._buffer) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([self._ctl_out], [], [], min(remaining, 1.0))
            if not readable:
                if self.proc is not None and self.proc.poll() is not None:
                    return None
                continue
            chunk = os.read(self._ctl_out, 1 << 20)
            if not chunk:
                return None
            self._buffer += chunk
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def _read_frame(self, deadline: float) -> bytes | None:
        head = self._read_exact(wire.FRAME.size, deadline)
        if head is None:
            return None
        (length,) = wire.FRAME.unpack(head)
        if length > wire.MAX_FRAME:
            raise ProtocolError(f"oversized frame ({length} bytes)")
        return self._read_exact(length, deadline)

    def _read_json(self, deadline: float) -> dict | None:
        frame = self._read_frame(deadline)
        if frame is None:
            return None
        if len(frame) > MAX_HEADER_BYTES:
            raise ProtocolError(f"oversized header ({len(frame)} bytes)")
        try:
            header = json.loads(frame)
        except (ValueError, RecursionError) as error:
            raise ProtocolError(f"garbled header: {str(error)[:100]}") from None
        if not isinstance(header, dict):
            raise ProtocolError("the header is not an object")
        return header

    # -- jobs -------------------------------------------------------------
    def run(self, source: str, spec: dict, *, limits: dict | None = None, oracle: list[str] | None = None,
            oracle_handler: OracleHandler | None = None, given_classes: list[str] | None = None) -> Outcome:
        """Run one procedure (``spec``) on ``source`` in a fresh child.

        ``oracle``: names the child replaces by proxies answered by
        ``oracle_handler(name, args, kwargs)`` in this process; only those
        names are served, and their time counts against the job's wall clock
        beyond ``limits["oracle_seconds"]``.  Whatever the sandbox sends back is
        untrusted: a garbled or oversized message ends the job as the
        submission's failure (``bad_result``), never as an exception.
        """
        limits = {**self.limits, **(limits or {})}
        for attempt in range(2):
            try:
                self.start()
                self._wait_ready()
                break
            except (SandboxError, ProtocolError) as error:
                self._cleanup_process()
                if attempt == 1:
                    raise SandboxError(str(error)) from None
        job = {"source": source, "spec": spec, "limits": limits, "oracle": list(oracle or []),
               "given_sources": _given.given_sources(given_classes or []), "threads": int(limits.get("threads", self.threads)),
               "scratch": str(self.scratch),
               "lib_dir": str(self.lib_dir),
               "run_as": [self.lease.uid, self.lease.gid] if self.lease is not None else None}
        try:
            wire.write_frame(self._ctl_in, wire.dumps(job))
        except OSError as error:
            self._cleanup_process()
            return Outcome("sandbox_error", error=f"could not send the job: {error}")
        try:
            return self._serve(limits, oracle, oracle_handler)
        except ProtocolError as error:
            # Only the submission can garble the zygote's messages (e.g. by writing to its pipe).
            self._cleanup_process()
            self.restarts += 1
            return Outcome("bad_result", error=f"the sandbox's messages were corrupted ({error}): did your code write to "
                                               "the grader's pipes?")
        finally:
            if self.lease is not None:
                kill_uid(self.lease.uid)  # every process the check started, daemons included

    def _serve(self, limits: dict, oracle: list[str] | None, oracle_handler: OracleHandler | None) -> Outcome:
        wall = float(limits["wall_seconds"])
        deadline = time.monotonic() + wall + 30.0
        oracle_budget = float(limits.get("oracle_seconds", DEFAULT_LIMITS["oracle_seconds"]))
        started = time.monotonic()
        allowed = set(oracle or [])
        while True:
            header = self._read_json(deadline)
            if header is None:
                # The zygote died or stopped answering: start afresh next time.
                seconds = time.monotonic() - started
                self._cleanup_process()
                self.restarts += 1
                if seconds >= wall:
                    return Outcome("timeout", seconds=seconds)
                return Outcome("crashed", error="the sandbox process died", seconds=seconds)
            payload = self._read_frame(deadline)
            if payload is None:
                self._cleanup_process()
                return Outcome("crashed", error="the sandbox process died", seconds=time.monotonic() - started)
            if header.get("type") == "oracle":
                # The oracle's time extends the deadline only within its budget, so that a
                # submission looping on oracle calls still ends.
                spent = self._answer_oracle(payload, allowed, oracle_handler, budget=oracle_budget)
                deadline += min(spent, max(0.0, oracle_budget))
                oracle_budget -= spent
                continue
            if header.get("type") != "done":
                raise ProtocolError(f"unexpected message {str(header.get('type'))[:40]!r}")
            return self._outcome(header, payload, limits)

    def _answer_oracle(self, payload: bytes, allowed: set[str], handler: OracleHandler | None, budget: float = 1e9) -> float:
        started = time.monotonic()
        try:
            if budget <= 0:
                raise TimeoutError("the time for answers by the grader is used up in this check (too many calls)")
            request = wire.loads(payload)
            wire.check_bounded(request)
            if not isinstance(request, dict) or not isinstance(request.get("name"), str):
                raise TypeError("malformed request")
            name = request["name"]
            if name not in allowed or handler is None:
                raise PermissionError(f"{name[:80]!r} is not available here")
            args, kwargs = request.get("args", []), request.get("kwargs", {})
            if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
                raise TypeError("malformed arguments")
            value = handler(name, list(args), dict(kwargs))
            reply = {"ok": True, "value": wire.to_plain(value)}
        except Exception as error:  # noqa: BLE001 - anything the request provokes goes back as an error
            reply = {"ok": False, "error": f"{type(error).__name__}: {wire.safe_text(error, 500)}"}
        try:
            wire.write_frame(self._ctl_in, wire.dumps(reply))
        except OSError:
            pass  # the sandbox died meanwhile: the next read says so
        return time.monotonic() - started

    def _outcome(self, header: dict, payload: bytes, limits: dict | None = None) -> Outcome:
        limits = {**DEFAULT_LIMITS, **(limits or getattr(self, "limits", {}))}
        def number(key, kind):
            value = header.get(key)
            return kind(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        stdout = header.get("stdout", "")
        base = dict(stdout=stdout[: int(limits["output_bytes"])] if isinstance(stdout, str) else "",
                    stdout_bytes=number("stdout_bytes", int) or 0, seconds=number("seconds", float) or 0.0,
                    exit_code=number("exit_code", int), signal=number("signal", int))
        reason = header.get("reason")
        if reason == "timeout":
            return Outcome("timeout", **base)
        if reason == "output_limit":
            return Outcome("output_limit", **base)
        if reason == "disk_limit":
            return Outcome("crashed", error=f"your code wrote more than {int(limits['scratch_bytes']) >> 20} MiB of files "
                                            "(disk limit)", **base)
        if reason in ("result_limit", "oracle_limit"):
            return Outcome("bad_result", error=f"{reason.replace('_', ' ')} exceeded", **base)
        if not header.get("has_result"):
            return Outcome("crashed", **base)
        try:
            record = torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
            wire.check_bounded(record, max_bytes=4 * int(limits["result_bytes"]))
            if not isinstance(record, dict):
                raise TypeError("result is not a dict")
        except Exception as error:  # noqa: BLE001 - untrusted bytes
            return Outcome("bad_result", error=f"{type(error).__name__}: {wire.safe_text(error, 300)}", **base)
        blocked = _short_strings(record.get("blocked_imports")) + _short_strings(record.get("imported_blocked"))
        if record.get("ok") is True:
            return Outcome("ok", value=record.get("value"), blocked_imports=blocked, **base)
        if record.get("error_type") == "SandboxRefused" and record.get("stage") == "setup":
            return Outcome("sandbox_error", error=_text(record.get("error"), 500), **base)
        stage = record.get("stage")
        return Outcome("error", error_type=_text(record.get("error_type"), 100), error=_text(record.get("error"), 4000),
                       traceback=_text(record.get("traceback"), 4000), blocked_imports=blocked,
                       stage=stage if stage in ("load", "setup") else None, **base)


class ProtocolError(Exception):
    """The sandbox sent something that breaks the protocol (only the submission can cause it)."""


#: Largest JSON header the zygote sends (its stdout excerpt is at most 64 KiB, escaped).
MAX_HEADER_BYTES = 1 << 20


def _text(value: Any, limit: int) -> str:
    """A string from an untrusted record, truncated; anything else becomes ``""``."""
    if not isinstance(value, str):
        return ""
    return value if len(value) <= limit else value[:limit] + " ..."


def _short_strings(value: Any, count: int = 20, limit: int = 200) -> list[str]:
    """Module names from an untrusted record: only strings, at most ``count`` of ``limit`` characters."""
    if not isinstance(value, (list, tuple)):
        return []
    return [_text(v, limit) for v in list(value)[:count] if isinstance(v, str)]
