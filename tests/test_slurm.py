"""A real one-node Slurm cluster (issue 12): munge, slurmctld and slurmd on
127.0.0.1 with a generated slurm.conf, ``grader/slurm/grade_array.sbatch``
submitted as a 2-task array over a folder of notebooks, then ``grader merge``;
the merged CSV must equal a plain ``grader batch`` of the same folder.

Needs root (the daemons run as root and the jobs as the submitting user) and
Debian's ``slurm-wlm`` (``.ci/run`` installs it where it can); skipped with the
reason otherwise.  No GPU: the script's ``--gres=gpu:1`` is overridden with
``sbatch --gres=none`` (the conf declares no GRES), as are its CPU and memory
requests.
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "grader" / "slurm" / "grade_array.sbatch"
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")
#: The grading options of every array task and of the plain batch (one cheap function, no training).
GRADE_ARGS = ["--no-overfit", "--no-map", "--functions", "iou"]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"({path.name}: not written)"


def _slurm_conf(d: Path, node: str) -> str:
    return f"""\
ClusterName=gradertest
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={d}/munge.sock
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} RealMemory=2000 State=UNKNOWN
PartitionName=grading Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def slurm_cluster():
    """``{"env": ..., "dir": ...}`` of a running one-node cluster; every daemon is stopped afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the one-node Slurm test needs root (slurmd runs the jobs; munged and slurmd as root here)")
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} not on PATH): apt-get install -y slurm-wlm")
    # Readable by everyone: slurmd (root) and the job's processes work here.
    d = Path(tempfile.mkdtemp(prefix="grader-slurm-", dir="/tmp"))
    os.chmod(d, 0o755)
    for sub in ("state", "spool", "out"):
        (d / sub).mkdir()
    key = d / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o600)
    node = socket.gethostname().split(".")[0]
    (d / "slurm.conf").write_text(_slurm_conf(d, node))
    env = {**os.environ, "SLURM_CONF": str(d / "slurm.conf")}
    for name in [k for k in env if k.startswith(("SLURM_", "SBATCH_")) and k != "SLURM_CONF"]:
        del env[name]  # a test run inside a Slurm job must not leak that job's settings
    daemons: list[tuple[str, subprocess.Popen]] = []

    def start(name: str, cmd: list[str]) -> None:
        log = (d / f"{name}.out").open("wb")
        daemons.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)))

    def why_down() -> str:
        dead = [f"{n} exited with {p.returncode}" for n, p in daemons if p.poll() is not None]
        logs = "\n".join(f"--- {n}:\n{_tail(d / f'{n}.out')}" for n, _ in daemons)
        return f"{'; '.join(dead) or 'the node never became idle'}\n{logs}"

    try:
        start("munged", ["munged", "-F", "-f", f"--key-file={key}", f"--socket={d}/munge.sock",
                         f"--pid-file={d}/munged.pid", f"--seed-file={d}/munge.seed", f"--log-file={d}/munged.log"])
        deadline = time.monotonic() + 20
        while not (d / "munge.sock").exists() and time.monotonic() < deadline and daemons[0][1].poll() is None:
            time.sleep(0.2)
        if not (d / "munge.sock").exists():
            pytest.skip(f"munged does not start: {why_down()}")
        start("slurmctld", ["slurmctld", "-D", "-c", "-f", str(d / "slurm.conf")])
        start("slurmd", ["slurmd", "-D", "-N", node, "-f", str(d / "slurm.conf")])
        state, deadline = "", time.monotonic() + 60
        while time.monotonic() < deadline and all(p.poll() is None for _, p in daemons):
            state = subprocess.run(["sinfo", "-h", "-n", node, "-o", "%t"], capture_output=True, text=True, env=env).stdout.strip()
            if state == "idle":
                break
            time.sleep(0.5)
        if state != "idle":
            pytest.skip(f"the one-node Slurm cluster does not start (node state {state!r}): {why_down()}")
        yield {"env": env, "dir": d}
    finally:
        for _, proc in reversed(daemons):  # slurmd, slurmctld, then munged
            if proc.poll() is None:
                proc.terminate()
        for _, proc in reversed(daemons):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        shutil.rmtree(d, ignore_errors=True)


def _submissions(folder: Path) -> None:
    """A reference notebook, the release notebook (stubs) and a notebook with a buggy iou."""
    from grader.source import reference_source, release_source
    from tests.grader_zoo.zoo import notebook_from_source, patch, write_notebook

    folder.mkdir(mode=0o755)
    reference = reference_source("two_stage")
    buggy = patch(reference, "iou", ".clamp(min=0).prod(dim=-1)", ".prod(dim=-1)")  # disjoint boxes overlap
    for student, source in (("ann", reference), ("ben", release_source("two_stage")), ("cat", buggy)):
        write_notebook(folder, notebook_from_source(source, "two_stage"), f"{student}.ipynb")


def _table(path: Path) -> list[dict]:
    """A grades CSV without its timing column (the only one that differs between runs)."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(path.open())]


def test_the_sbatch_array_on_a_real_cluster_merges_to_the_plain_batch(slurm_cluster):
    env, d = slurm_cluster["env"], slurm_cluster["dir"]
    subs, out = d / "subs", d / "out"
    _submissions(subs)
    export = ",".join(["ALL", f"SUBMISSIONS={subs}", "ASSIGNMENT=two_stage", f"OUT={out}", "NSHARDS=2",
                       f"PYTHON={sys.executable}", f"GRADER_ROOT={ROOT}", "GRADER_ARGS=" + " ".join(GRADE_ARGS)])
    job_env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))}
    # The script asks for a GPU, 4 CPUs and 32 GB: overridden on the command line (a CPU-only node).
    submitted = subprocess.run(["sbatch", "--parsable", "--gres=none", "--cpus-per-task=1", "--mem=500M",
                                "--array=1-2", f"--chdir={out}", f"--export={export}", str(SCRIPT)],
                               capture_output=True, text=True, env=job_env, timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 300
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, env=env).stdout.strip():
        assert time.monotonic() < deadline, f"array {job} still queued/running after 300 s"
        time.sleep(1)
    logs = "\n".join(f"--- {p.name}:\n{_tail(p)}" for p in sorted(out.glob("grade-*.out")))
    shown = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, env=env).stdout
    tasks = [line for line in shown.splitlines() if "ArrayTaskId=" in line]
    assert len(tasks) == 2 and all("JobState=COMPLETED" in t and "ExitCode=0:0" in t for t in tasks), (shown, logs)
    assert sorted(p.name for p in out.glob("shard-*_reports")) == ["shard-1_reports", "shard-2_reports"], logs

    merged = subprocess.run([sys.executable, "-m", "grader", "merge", str(out / "shard-1_reports"),
                             str(out / "shard-2_reports"), "--out", str(d / "merged.csv")],
                            capture_output=True, text=True, cwd=ROOT, env=job_env, timeout=120)
    assert merged.returncode == 0, merged.stderr
    plain = subprocess.run([sys.executable, "-m", "grader", "batch", str(subs), "-a", "two_stage", "--jobs", "2",
                            "--out", str(d / "plain.csv"), "--results-dir", str(d / "plain_reports"), *GRADE_ARGS],
                           capture_output=True, text=True, cwd=ROOT, env=job_env, timeout=600)
    assert plain.returncode == 0, plain.stderr
    table = _table(d / "merged.csv")
    assert table == _table(d / "plain.csv")
    scores = {row["student"]: float(row["score"]) for row in table}
    assert set(scores) == {"ann", "ben", "cat"} and scores["ann"] == 6.0 and scores["ben"] == 0.0 and scores["cat"] < 6, scores
