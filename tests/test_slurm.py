"""Studies on a real single-node SLURM cluster (tests/infra/slurm_cluster.sh starts slurmctld,
slurmd and munged for the session; accounting off, so `sacct` does not work, and ended jobs
leave the queue after MinJobAge=2 s): one job per run, scancel and resume, pre-emption
with requeue, a request larger than the node, a job that left the queue without a result,
SIGTERM to a study whose jobs are pending, and two study processes at once training each
run once. Skipped, with the reason, where SLURM cannot run (not root, or slurm-wlm and
munge not installed)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.paths import ROOT
from tests.helpers import client, history, run_cli, show, study

pytestmark = pytest.mark.xdist_group("slurm")  # one cluster (a module fixture), in one test worker

SCRIPT = ROOT / "tests" / "infra" / "slurm_cluster.sh"
SMALL = ["cpus_per_task=1", "mem_gb=1", "poll_s=1"]


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "the test cluster's daemons run as root"
    missing = [b for b in ("slurmctld", "slurmd", "munged", "sbatch") if not shutil.which(b)]
    return f"SLURM is not installed ({', '.join(missing)} missing; Debian: apt-get install slurm-wlm munge)" if missing else None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if _why_not():
        pytest.skip(_why_not())
    state = tmp_path_factory.mktemp("slurm")
    port = _free_port_pair()  # slurmctld and slurmd: never another cluster's on this machine
    env = os.environ | {"SLURM_CLUSTER_CTLD_PORT": str(port)}
    started = subprocess.run([str(SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=180, env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    patch = pytest.MonkeyPatch()
    patch.setenv("SLURM_CONF", str(state / "etc" / "slurm.conf"))
    yield state
    patch.undo()
    subprocess.run([str(SCRIPT), "stop", str(state)], capture_output=True, timeout=120, env=env)


def _free_port_pair() -> int:
    import socket

    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
        with socket.socket() as b:
            try:
                b.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no two free consecutive ports")


@pytest.fixture
def slurm_env(cluster, store, one_run, tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATION_SLURM_LOGS", str(tmp_path / "slurm-logs"))
    return store


def _squeue() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True)
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def _start(args: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ablations.study", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=os.environ | {"PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_checkpoint(folder: Path, proc: subprocess.Popen, timeout: float = 300) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        found = list(folder.glob("*/last.ckpt"))
        if found:
            time.sleep(2)  # inside the next epoch
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no checkpoint was written:\n{proc.stdout.read() if proc.poll() is not None else ''}")


@pytest.mark.slow
def test_make_ablate_with_launcher_slurm(slurm_env, tmp_path):
    """`make ablate-dropout PROFILE=smoke SEEDS=2 LAUNCHER=slurm`: four jobs, seen in squeue
    while they run, one FINISHED run each under a FINISHED parent, and the report."""
    seen: set[str] = set()
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen.update(_squeue())
            time.sleep(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    make = ["make", "-s", "ablate-dropout", "PROFILE=smoke", "SEEDS=2", "LAUNCHER=slurm", f"SLURM={' '.join(SMALL)}", "ARGS=trainer.max_epochs=1"]
    proc = subprocess.run(make, cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=900)
    done.set()
    watcher.join()
    assert proc.returncode == 0, show(proc)
    parents, children = study(slurm_env, "dropout")
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    jobs = {c.data.tags["slurm_job_id"] for c in children}
    assert len(jobs) == 4 and jobs <= seen, (jobs, seen)
    assert all(c.data.tags["launcher"] == "slurm" for c in children)
    assert (tmp_path / "reports" / "dropout" / "report.md").exists()
    assert len(list((tmp_path / "slurm-logs").glob("*/*_log.out"))) == 4


LONG = ["one_run", "--profile", "smoke", "--seeds", "1", "--launcher", "slurm", "--slurm", " ".join(SMALL), "trainer.max_epochs=4", "data.train_size=2048"]


def _interrupt_a_job(store: str, tmp_path: Path, *scancel: str) -> tuple[subprocess.Popen, str, str, str]:
    """Starts the one-run study, and once its run has a checkpoint, sends its job
    `scancel *scancel`; returns the study process once it ended, its output, the run and the job."""
    proc = _start(LONG)
    try:
        run_id = _wait_for_checkpoint(tmp_path / "checkpoints", proc).parent.name
        job = client(store).get_run(run_id).data.tags["slurm_job_id"]
        subprocess.run(["scancel", *scancel, job], check=True)
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc, out, run_id, job


@pytest.mark.slow
def test_scancel_then_the_same_command_resumes(slurm_env, tmp_path):
    proc, out, run_id, _ = _interrupt_a_job(slurm_env, tmp_path)
    assert proc.returncode == 1, out[-3000:]
    cancelled = client(slurm_env).get_run(run_id)
    assert cancelled.info.status in ("KILLED", "FAILED") and "slurm-logs" in cancelled.data.tags["failure_reason"], cancelled.data.tags
    before = history(slurm_env, run_id, "train_loss")
    again = run_cli("ablations.study", *LONG, timeout=900)
    assert again.returncode == 0, show(again)
    assert f"resume  {cancelled.info.run_name} (run {run_id})" in again.stdout
    after = history(slurm_env, run_id, "train_loss")
    assert client(slurm_env).get_run(run_id).info.status == "FINISHED"
    assert [s for s, _ in after] == list(range(4)) and after[: len(before)] == before  # resumed, not retrained


@pytest.mark.slow
def test_a_preempted_job_requeues_and_resumes_by_itself(slurm_env, tmp_path):
    """SIGUSR2 is what SLURM sends a job before pre-empting it or at its time limit;
    submitit requeues the job and the new one resumes the run from its checkpoint."""
    proc, out, run_id, job = _interrupt_a_job(slurm_env, tmp_path, "--signal=USR2")
    assert proc.returncode == 0, out[-3000:]
    run = client(slurm_env).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert [s for s, _ in history(slurm_env, run_id, "train_loss")] == list(range(4))  # every epoch once
    log = (tmp_path / "slurm-logs" / job / f"{job}_0_log.out").read_text()
    assert "resuming from" in log and "preempted" in (tmp_path / "slurm-logs" / job / f"{job}_0_log.err").read_text()


@pytest.mark.slow
def test_no_wait_submits_an_array_and_report_comes_later(slurm_env, tmp_path):
    proc = run_cli("ablations.study", "pooling", "--profile", "smoke", "--seeds", "1", "--launcher", "slurm", "--slurm", " ".join(SMALL), "--no-wait",
                   "trainer.max_epochs=1", timeout=300)  # fmt: skip
    assert proc.returncode == 0, show(proc)
    assert "jobs submitted" in proc.stdout and "make report-pooling" in proc.stdout
    deadline = time.time() + 600
    while _squeue() and time.time() < deadline:
        time.sleep(2)
    _, children = study(slurm_env, "pooling")
    assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED"]
    report = run_cli("ablations.report", "pooling")
    assert report.returncode == 0 and "| overlapping | 1 |" in report.stdout, show(report)


@pytest.mark.slow
def test_submitit_local_executor_needs_no_cluster(store, tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATION_SLURM_LOGS", str(tmp_path / "slurm-logs"))
    proc = run_cli("ablations.study", "pooling", "--profile", "smoke", "--seeds", "1", "--launcher", "slurm", "--slurm", "cluster=local",
                   "trainer.max_epochs=1", timeout=600)  # fmt: skip
    assert proc.returncode == 0, show(proc)
    _, children = study(store, "pooling")
    assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED"]


@pytest.mark.slow
def test_two_study_processes_at_once_train_each_run_once(store):
    args = ["pooling", "--profile", "smoke", "--seeds", "1", "trainer.max_epochs=2"]
    first, second = _start(args), _start(args)
    outs = [p.communicate(timeout=900)[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    _, children = study(store, "pooling")
    trained = [c for c in children if c.info.status == "FINISHED" and "reused_from" not in c.data.tags]
    per_config = {}
    for c in trained:
        per_config.setdefault(c.data.tags["config_hash"], []).append(c.info.run_id)
    assert len(per_config) == 2 and all(len(ids) == 1 for ids in per_config.values()), per_config
    assert sum(o.count("\nbusy   ") + o.startswith("busy") for o in outs) + sum(o.count("\nskip   ") for o in outs) >= 2, outs


def test_bad_slurm_options_exit_2(store):
    proc = run_cli("ablations.study", "pooling", "--profile", "smoke", "--launcher", "slurm", "--slurm", "mem_gb=lots")
    assert proc.returncode == 2 and "mem_gb" in proc.stderr, show(proc)
    proc = run_cli("ablations.study", "pooling", "--profile", "smoke", "--no-wait")
    assert proc.returncode == 2 and "LAUNCHER=slurm" in proc.stderr, show(proc)


class _Watched:
    """A study process whose output lines are collected as they come, with when each came."""

    def __init__(self, args: list[str]):
        self.proc = _start(args)
        self.lines: list[tuple[float, str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip()))

    @property
    def out(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for(self, text: str, count: int = 1, timeout: float = 120) -> float:
        """When the `count`-th line containing `text` came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [t for t, line in list(self.lines) if text in line]
            if len(found) >= count:
                return found[count - 1]
            time.sleep(0.2)
        raise AssertionError(f"no {count} lines with {text!r} within {timeout} s:\n{self.out}")

    def ended(self, timeout: float) -> tuple[int, float]:
        """Its exit code and when it exited; fails if it is still alive after `timeout` s."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the study was still alive {timeout} s later:\n{self.out}") from None
        return code, time.monotonic()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()


@pytest.fixture
def node_busy(cluster):
    """A job that holds every CPU of the node: the study's jobs wait (Resources, Priority) behind it."""
    job = subprocess.run(
        ["sbatch", "--parsable", "--exclusive", "--mem=100M", "-o", "/dev/null", "--wrap", "sleep 600"], capture_output=True, text=True, check=True
    ).stdout.strip()
    deadline = time.time() + 60
    while subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip() != "RUNNING":
        assert time.time() < deadline, "the blocking job did not start"
        time.sleep(0.3)
    yield job
    subprocess.run(["scancel", job])


def _node_cpus() -> int:
    return int(subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, check=True).stdout.split()[0].rstrip("+"))


def _pending(jobs: set[str]) -> set[str]:
    out = subprocess.run(["squeue", "-h", "-t", "PD,R", "-o", "%i"], capture_output=True, text=True)
    return jobs & {line.strip() for line in out.stdout.splitlines()}


@pytest.mark.slow
def test_a_request_larger_than_the_node_fails_fast(slurm_env):
    """More CPUs than the node has: SLURM accepts the job and keeps it PENDING (PartitionConfig)
    forever; the study says so, naming the request and the node, cancels it and exits 2."""
    cpus = _node_cpus() + 1
    study_ = _Watched(["one_run", "--profile", "smoke", "--seeds", "1", "--launcher", "slurm", "--slurm", f"cpus_per_task={cpus} mem_gb=1 poll_s=1"])
    try:
        submitted = study_.wait_for("slurm job ")
        code, ended = study_.ended(timeout=60)
    finally:
        study_.kill()
    out = study_.out
    assert code == 2, out
    said = study_.wait_for("can never start", timeout=1)
    assert said - submitted < 60, out
    assert f"asks for {cpus} CPUs, 1,024 MB" in out and f"largest node of partition debug is {_hostname()}: {cpus - 1} CPUs" in out, out
    assert 'SLURM="cpus_per_task=' in out, out
    _, [run] = study(slurm_env, "one_run")
    job = run.data.tags["slurm_job_id"]
    assert run.info.status == "FAILED" and "can never start" in run.data.tags["failure_reason"], run.data.tags
    assert not _pending({job}), f"job {job} is still queued"
    print(f"\nsaid so {said - submitted:.1f} s after submitting; exited {ended - submitted:.1f} s after")


def _hostname() -> str:
    import socket

    return socket.gethostname().split(".")[0]


@pytest.mark.slow
def test_a_job_that_left_the_queue_without_a_result_ends_its_run(slurm_env, node_busy):
    """The study's job is cancelled from outside while it waits, and SLURM forgets it
    (MinJobAge) before the study looks again (the study is stopped meanwhile): with no
    accounting to ask, the study still ends the run FAILED, saying why and where its log is."""
    study_ = _Watched(["one_run", "--profile", "smoke", "--seeds", "1", "--launcher", "slurm", "--slurm", " ".join(SMALL)])
    try:
        study_.wait_for("slurm job ")
        _, [run] = study(slurm_env, "one_run")
        job = run.data.tags["slurm_job_id"]
        study_.proc.send_signal(signal.SIGSTOP)
        subprocess.run(["scancel", job], check=True)
        deadline = time.time() + 60
        while subprocess.run(["squeue", "-h", "-t", "all", "-j", job, "-o", "%i"], capture_output=True, text=True).stdout.strip():
            assert time.time() < deadline, f"SLURM still knows job {job} a minute after scancel"
            time.sleep(0.5)
        resumed = time.monotonic()
        study_.proc.send_signal(signal.SIGCONT)
        code, ended = study_.ended(timeout=60)
    finally:
        study_.kill()
    out = study_.out
    assert code == 1, out
    run = client(slurm_env).get_run(run.info.run_id)
    why = run.data.tags["failure_reason"]
    assert run.info.status == "FAILED", run.info.status
    assert f"slurm job {job} left the queue without a result" in why and "it never started" in why, why
    assert f"(log: {Path(os.environ['ABLATION_SLURM_LOGS']) / job / f'{job}_0_log.out'})" in why, why
    print(f"\nrun ended {ended - resumed:.1f} s after the study looked again")


@pytest.mark.slow
def test_sigterm_stops_a_study_whose_jobs_are_pending(slurm_env, node_busy):
    """SIGTERM to a study whose two jobs wait behind another job: it exits within 30 s,
    its runs KILLED and its jobs cancelled; while they waited it said why every few seconds."""
    args = ["pooling", "--profile", "smoke", "--seeds", "1", "--launcher", "slurm", "--slurm", " ".join([*SMALL, "say_pending_s=2"])]
    study_ = _Watched(args)
    try:
        study_.wait_for("still pending (", count=2)
        study_.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code, ended = study_.ended(timeout=30)
    finally:
        study_.kill()
    out = study_.out
    assert code == 130, out
    assert "still pending (Resources)" in out or "still pending (Priority)" in out, out
    _, children = study(slurm_env, "pooling")
    assert sorted(c.info.status for c in children) == ["KILLED", "KILLED"], [(c.info.status, c.data.tags.get("failure_reason")) for c in children]
    jobs = {c.data.tags["slurm_job_id"] for c in children}
    assert len(jobs) == 2 and not _pending(jobs), out
    print(f"\nexited {ended - sent:.1f} s after SIGTERM")


@pytest.mark.parametrize(
    ("text", "gpus"),
    [("(null)", 0), ("N/A", 0), ("gres:gpu:2", 2), ("gres/gpu:a100:4", 4), ("gpu:a100:4(S:0-1),nvme:1", 4), ("gpu:2,gpu:v100:1", 3)],
)
def test_gpus_are_read_from_what_scontrol_and_sinfo_print(text, gpus):
    """The forms a job's TresPerNode and a node's GRES take (the test cluster has no GPUs to show them)."""
    from ablations.study.slurm_state import _gpus

    assert _gpus(text) == gpus


def test_a_refusal_by_sbatch_is_told_from_other_submission_errors():
    from ablations.study.slurm import _refusal

    failed = "Batch job submission failed: Requested node configuration is not available"
    refused = f"sbatch: error: Memory specification can not be satisfied\nsbatch: error: {failed}"
    assert _refusal(refused) == f"Memory specification can not be satisfied; {failed}"
    assert _refusal("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation") is None
