"""Submissions that attack the sandbox itself (issue 11, "the sandbox is a sandbox in both
modes" and "the grader's own process is bounded").

Each entry is the reference submission with hostile code put first in the body
of ``class_spec_nms`` (a function whose checks use the ``nms`` oracle), so the
attack runs in the sandboxed child during every check of that function.  An
entry says what the grade must look like (``points``: ``"full"`` when the
attack gains and costs nothing, ``"lost"`` when it must cost the function's
points), and ``expect(report, context)`` checks what the attack must not have
achieved (a secret in a report, a process that outlived the check, ...).
Built from :mod:`solutions` when the tests run; nothing is a committed fixture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from grader.source import reference_source
from tests.grader_zoo.zoo import body_prefix

TARGET = "class_spec_nms"
HONEST = "get_fpn_location_coords"  # graded alongside: must keep its points
ONE = "one_stage"
#: Marker in the command line of a daemon that must not outlive the check.
DAEMON_MARK = "977.25"


@dataclass
class SandboxEntry:
    name: str
    code: str
    #: "full": the function keeps its points (the attack achieved nothing); "lost": it loses them.
    points: str
    #: Modes where the entry applies (a documented limit of the fallback excludes it there).
    modes: tuple[str, ...] = ("bwrap", "fallback")
    #: Words one of the function's failure messages must contain (``points="lost"``).
    words: tuple[str, ...] = ()
    #: Seconds the whole grade of the function may take at most.
    max_seconds: float = 120.0
    expect: Callable | None = None
    why: str = ""

    def source(self) -> str:
        return body_prefix(reference_source(ONE), TARGET, self.code)


READ_SECRETS = r'''
import os as _os
for _path in ("/etc/shadow", "/etc/gshadow", "/root/.bash_history", "/proc/1/environ"):
    try:
        with open(_path, "rb") as _f:
            print("SECRET", _path, _f.read(200))
    except OSError as _error:
        print("no", _path, type(_error).__name__)
'''

NOT_ROOT = r'''
import os as _os
if 0 in _os.getresuid() or 0 in _os.getresgid():
    raise RuntimeError(f"student code runs as root: {_os.getresuid()}")
with open("/proc/self/status") as _f:
    _status = dict(line.split(":", 1) for line in _f if ":" in line)
if int(_status["CapEff"].strip(), 16) or _status["NoNewPrivs"].strip() != "1":
    raise RuntimeError(f"capabilities {_status['CapEff'].strip()} no_new_privs {_status['NoNewPrivs'].strip()}")
'''

SETSID_DAEMON = r'''
import os as _os
if _os.fork() == 0:
    try:
        _os.setsid()
        if _os.fork() == 0:
            _os.execv("/bin/sleep", ["sleep", "%s"])
    finally:
        _os._exit(0)
''' % DAEMON_MARK

TMP_FLOOD = r'''
_chunk = b"x" * (15 << 20)
_written = 0
for _i in range(40):
    try:
        with open(f"/tmp/flood-{_i}", "wb") as _f:
            _f.write(_chunk)
        _written += len(_chunk)
    except OSError:
        break
if _written > (100 << 20):
    raise RuntimeError(f"/tmp took {_written >> 20} MiB")
'''

SCRATCH_FLOOD = r'''
_chunk = b"x" * (15 << 20)
for _i in range(24):
    with open(f"flood-{_i}", "wb") as _f:
        _f.write(_chunk)
'''

ORACLE_LOOP = r'''
import torch as _torch
_g = _torch.Generator().manual_seed(0)
_xy = _torch.rand(7000, 2, generator=_g) * 200
_b = _torch.cat([_xy, _xy + 20], 1)
_s = _torch.rand(7000, generator=_g)
while True:
    nms(_b, _s, 0.5)
'''

SHARED_REFERENCE_BOMB = r'''
import io as _io, os as _os, struct as _struct, torch as _torch
_oracle = next(c.cell_contents for c in nms.__closure__ if hasattr(c.cell_contents, "request_fd"))
_bomb = []
for _ in range(30):  # 2^30 paths in a 2 KB frame
    _bomb = [_bomb, _bomb]
_buffer = _io.BytesIO()
_torch.save({"name": "nms", "args": [_bomb, _bomb, 0.5], "kwargs": {}}, _buffer)
_data = _buffer.getvalue()
assert len(_data) < 4096
_os.write(_oracle.request_fd, _struct.pack(">Q", len(_data)) + _data)
_head = _os.read(_oracle.reply_fd, 8)
_reply = _torch.load(_io.BytesIO(_os.read(_oracle.reply_fd, _struct.unpack(">Q", _head)[0])), weights_only=True)
if _reply.get("ok") or "Unbounded" not in str(_reply.get("error")):
    raise RuntimeError(f"the grader answered a 2^30-path request: {_reply}")
'''

IMPORT_RECORD_BOMB = r'''
import sys as _sys
_blocker = next(h for h in _sys.meta_path if hasattr(h, "attempts"))
_row = [0] * 1_000_000
_blocker.attempts.append([_row] * 2000)
'''

PIPE_WRITE = r'''
import os as _os
for _fd in range(3, 64):
    try:
        _out = _os.open(f"/proc/{_os.getppid()}/fd/{_fd}", _os.O_WRONLY | _os.O_NONBLOCK)
    except OSError:
        continue
    try:
        _os.write(_out, (5).to_bytes(8, "big") + b"}{!!!")
    except OSError:
        pass
    _os.close(_out)
'''


def _no_secret_in_report(report, context) -> None:
    text = "\n".join([c.output + c.detail + c.message for c in report.checks] + report.notes + report.errors)
    assert "SECRET" not in text, "a host secret was read and reached the report"


def _no_daemon_left(report, context) -> None:
    import os

    left = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if DAEMON_MARK.encode() in f.read():
                        left.append(pid)
            except OSError:
                pass
    assert not left, f"processes started by the check outlived it: {left}"


def sandbox_entries() -> list[SandboxEntry]:
    return [
        SandboxEntry("read_host_secrets", READ_SECRETS, "full", expect=_no_secret_in_report,
                     why="bwrap: /etc holds only the loader's files; both: an unprivileged uid cannot read root's files"),
        SandboxEntry("runs_unprivileged", NOT_ROOT, "full",
                     why="as root, every child drops to a uid of its own with no capabilities and no_new_privs"),
        SandboxEntry("setsid_daemon", SETSID_DAEMON, "full", expect=_no_daemon_left,
                     why="a daemon that left the session is killed after the check (subreaper; uid)"),
        SandboxEntry("tmp_flood", TMP_FLOOD, "full", modes=("bwrap",),
                     why="bwrap's /tmp is a 64 MiB tmpfs; in the fallback /tmp is the host's (documented)"),
        SandboxEntry("scratch_flood", SCRATCH_FLOOD, "lost", words=("disk", "no space", "space left"),
                     why="the scratch folder holds at most 256 MiB (bwrap: tmpfs; fallback: watched, the job killed)"),
        SandboxEntry("oracle_loop", ORACLE_LOOP, "lost", words=("time limit", "used up"), max_seconds=90.0,
                     why="oracle answers extend the deadline by at most limits.oracle_seconds"),
        SandboxEntry("shared_reference_bomb", SHARED_REFERENCE_BOMB, "full", max_seconds=90.0,
                     why="the grader decodes oracle requests bounded (elements, depth) and answers with an error"),
        SandboxEntry("import_record_bomb", IMPORT_RECORD_BOMB, "lost", words=("could not be read back", "elements"),
                     why="result records are checked for size before anything is printed from them"),
        SandboxEntry("zygote_pipe_write", PIPE_WRITE, "full",
                     why="the zygote is not dumpable and runs as another uid: /proc/<ppid>/fd cannot be opened"),
    ]
