"""Run untrusted submission code in a separate, limited process.

Two isolation levels, chosen by :func:`detect_mode` (or forced with
``mode=``/``GRADER_SANDBOX``):

``bwrap`` (preferred; Debian/Ubuntu package ``bubblewrap``)
    The zygote (see :mod:`grader._child`) runs under bubblewrap with every
    namespace unshared: no network, its own PID namespace (it cannot see or
    signal the grader), a read-only view of only the system directories, the
    Python installation and ``data_utils`` -- ``solutions``, ``grader``, the
    submissions, the rubric and the home directory do not exist inside -- and
    one writable scratch directory (removed afterwards).
``fallback`` (no bubblewrap, or it cannot create namespaces, e.g. in some
    containers)
    The same zygote without bubblewrap: resource limits, a scrubbed
    environment, a scratch working directory, stdin from ``/dev/null`` and an
    import hook refusing ``solutions``/``grader``.  Known limits, stated
    plainly: the code runs as the grader's user, so it *can* read files the
    grader can read (including the reference, by path), write where that user
    can write and signal that user's processes; the network is not blocked.
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

from grader import _child

CHILD_SOURCE_PATH = Path(_child.__file__)
REPO_ROOT = Path(__file__).resolve().parents[1]
MODES = ("auto", "bwrap", "fallback")

#: Default per-check limits (overridden per check and by the rubric).
DEFAULT_LIMITS = {
    "wall_seconds": 30.0,
    "cpu_seconds": 120.0,
    "memory_mb": 3072,
    "output_bytes": 64 << 10,
    "output_hard_bytes": 16 << 20,
    "file_bytes": 16 << 20,
    "result_bytes": 512 << 20,
}


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


def bwrap_command(scratch: Path, *, cuda: bool = False, extra_ro: tuple[Path, ...] = ()) -> list[str]:
    """The bubblewrap prefix for a sandbox whose only writable place is ``scratch``."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxError("bwrap is not installed")
    cmd = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    for system_dir in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc"):
        if os.path.exists(system_dir):
            cmd += ["--ro-bind", system_dir, system_dir] if not os.path.islink(system_dir) else ["--symlink", os.readlink(system_dir), system_dir]
    # /tmp, /proc and /dev first: a bind below /tmp (a venv or a bundle there) must not be hidden by the tmpfs.
    cmd += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for path in [*_bind_paths(), *extra_ro]:
        if str(path).startswith(("/usr", "/bin", "/sbin", "/lib", "/etc")):
            continue
        cmd += ["--ro-bind", str(path), str(path)]
    if os.path.isdir("/sys"):
        cmd += ["--ro-bind", "/sys", "/sys"]
    cmd += ["--bind", str(scratch), str(scratch)]
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
        user = " as user nobody" if probe_nobody() else ""
        return "fallback", f"fallback isolation{user} (resource limits, scrubbed environment, import hook): requested"
    ok, reason = probe_bwrap()
    if ok:
        return "bwrap", "bubblewrap: no network, read-only system, no access to the reference or grader"
    if requested == "bwrap":
        raise SandboxError(f"sandbox mode 'bwrap' requested but unavailable: {reason}")
    user = " as user nobody" if probe_nobody() else ""
    return "fallback", f"fallback isolation{user} (resource limits, scrubbed environment, import hook): {reason}"


NOBODY = 65534


def _drop_to(uid: int, gid: int):
    def drop() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return drop


def probe_nobody() -> bool:
    """As root without bubblewrap: can user ``nobody`` run this Python with torch?  (cached)"""
    if "nobody" in _PROBE_CACHE:
        return _PROBE_CACHE["nobody"][0]
    ok = False
    if hasattr(os, "geteuid") and os.geteuid() == 0 and os.environ.get("GRADER_FALLBACK_USER", "nobody") == "nobody":
        code = "import importlib.util as u, sys; sys.exit(0 if u.find_spec('torch') and u.find_spec('torchvision') else 1)"
        try:
            proc = subprocess.run([sys.executable, "-I", "-c", code], preexec_fn=_drop_to(NOBODY, NOBODY),
                                  capture_output=True, timeout=60, cwd="/", env={"PATH": "/usr/bin:/bin"})
            ok = proc.returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
    _PROBE_CACHE["nobody"] = (ok, "")
    return ok


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

    # -- lifecycle --------------------------------------------------------
    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self._cleanup_process()
        self.scratch = Path(tempfile.mkdtemp(prefix="grader-sandbox-"))
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
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        source = CHILD_SOURCE_PATH.read_text()
        python = [sys.executable, "-I", "-c", source, "--zygote", f"{to_child_r},{from_child_w}"]
        cmd = (bwrap_command(self.scratch, cuda=self.cuda, extra_ro=self.extra_ro) + python) if self.mode == "bwrap" else python
        env = _scrubbed_env(self.scratch, self.threads, self.cuda)
        preexec = None
        if self.mode == "fallback" and probe_nobody():
            # Root without bubblewrap (e.g. Gradescope's container): run as
            # 'nobody', who cannot read root-only files or write outside scratch.
            os.chown(self.scratch, NOBODY, NOBODY)
            preexec = _drop_to(NOBODY, NOBODY)
        self._started_at = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            pass_fds=(to_child_r, from_child_w), env=env, cwd=self.scratch, start_new_session=True,
            preexec_fn=preexec,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._ctl_in, self._ctl_out = to_child_w, from_child_r
        self._buffer = bytearray()
        self.ready = None

    def _wait_ready(self, timeout: float = 180.0) -> None:
        if self.ready is not None:
            return
        header = self._read_json(time.monotonic() + timeout)
        if header is None or header.get("type") != "ready":
            stderr = self._stderr_tail()
            self._cleanup_process()
            raise SandboxError(f"the sandbox did not start: {stderr or header}")
        self.ready = header
        self.boot_seconds = time.monotonic() - self._started_at

    def close(self) -> None:
        self._cleanup_process()

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
        head = self._read_exact(_child.FRAME.size, deadline)
        if head is None:
            return None
        (length,) = _child.FRAME.unpack(head)
        if length > _child.MAX_FRAME:
            raise SandboxError("oversized frame from the sandbox")
        return self._read_exact(length, deadline)

    def _read_json(self, deadline: float) -> dict | None:
        frame = self._read_frame(deadline)
        if frame is None:
            return None
        try:
            return json.loads(frame)
        except ValueError as error:
            raise SandboxError(f"garbled header from the sandbox: {error}") from error

    # -- jobs -------------------------------------------------------------
    def run(self, source: str, spec: dict, *, limits: dict | None = None, oracle: list[str] | None = None,
            oracle_handler: OracleHandler | None = None, given_classes: list[str] | None = None) -> Outcome:
        """Run one procedure (``spec``) on ``source`` in a fresh child.

        ``oracle``: names the child replaces by proxies answered by
        ``oracle_handler(name, args, kwargs)`` in this process; only those
        names are served.
        """
        limits = {**self.limits, **(limits or {})}
        for attempt in range(2):
            try:
                self.start()
                self._wait_ready()
                break
            except SandboxError:
                self._cleanup_process()
                if attempt == 1:
                    raise
        job = {"source": source, "spec": spec, "limits": limits, "oracle": list(oracle or []),
               "given_classes": list(given_classes or []), "threads": int(limits.get("threads", self.threads)), "scratch": str(self.scratch),
               "lib_dir": str(self.lib_dir)}
        try:
            _child.write_frame(self._ctl_in, _child.dumps(job))
        except OSError as error:
            self._cleanup_process()
            return Outcome("sandbox_error", error=f"could not send the job: {error}")
        deadline = time.monotonic() + float(limits["wall_seconds"]) + 30.0
        started = time.monotonic()
        allowed = set(oracle or [])
        while True:
            header = self._read_json(deadline)
            if header is None:
                # The zygote died or stopped answering: start afresh next time.
                seconds = time.monotonic() - started
                self._cleanup_process()
                self.restarts += 1
                if seconds >= float(limits["wall_seconds"]):
                    return Outcome("timeout", seconds=seconds)
                return Outcome("crashed", error="the sandbox process died", seconds=seconds)
            payload = self._read_frame(deadline)
            if payload is None:
                self._cleanup_process()
                return Outcome("crashed", error="the sandbox process died", seconds=time.monotonic() - started)
            if header.get("type") == "oracle":
                deadline += self._answer_oracle(payload, allowed, oracle_handler)
                continue
            if header.get("type") != "done":
                self._cleanup_process()
                return Outcome("sandbox_error", error=f"unexpected message {header.get('type')!r}")
            return self._outcome(header, payload)

    def _answer_oracle(self, payload: bytes, allowed: set[str], handler: OracleHandler | None) -> float:
        started = time.monotonic()
        try:
            request = _child.loads(payload)
            name = request["name"]
            if name not in allowed or handler is None:
                raise PermissionError(f"{name!r} is not available here")
            value = handler(name, list(request.get("args", [])), dict(request.get("kwargs", {})))
            reply = {"ok": True, "value": _child.to_plain(value)}
        except Exception as error:  # noqa: BLE001 - anything the request provokes goes back as an error
            reply = {"ok": False, "error": f"{type(error).__name__}: {str(error)[:500]}"}
        _child.write_frame(self._ctl_in, _child.dumps(reply))
        return time.monotonic() - started

    def _outcome(self, header: dict, payload: bytes) -> Outcome:
        base = dict(stdout=header.get("stdout", ""), stdout_bytes=int(header.get("stdout_bytes", 0)),
                    seconds=float(header.get("seconds", 0.0)), exit_code=header.get("exit_code"), signal=header.get("signal"))
        reason = header.get("reason")
        if reason == "timeout":
            return Outcome("timeout", **base)
        if reason == "output_limit":
            return Outcome("output_limit", **base)
        if reason in ("result_limit", "oracle_limit"):
            return Outcome("bad_result", error=f"{reason.replace('_', ' ')} exceeded", **base)
        if not header.get("has_result"):
            return Outcome("crashed", **base)
        try:
            record = torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
            if not isinstance(record, dict):
                raise TypeError("result is not a dict")
        except Exception as error:  # noqa: BLE001 - untrusted bytes
            return Outcome("bad_result", error=f"{type(error).__name__}: {str(error)[:300]}", **base)
        blocked = [str(x) for x in record.get("blocked_imports", []) or []] + [str(x) for x in record.get("imported_blocked", []) or []]
        if record.get("ok"):
            return Outcome("ok", value=record.get("value"), blocked_imports=blocked, **base)
        return Outcome("error", error_type=str(record.get("error_type")), error=str(record.get("error")),
                       traceback=str(record.get("traceback") or ""), blocked_imports=blocked, stage=record.get("stage"), **base)
