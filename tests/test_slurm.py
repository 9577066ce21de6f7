"""Studies on a real single-node SLURM cluster (tests/infra/slurm_cluster.sh starts slurmctld,
slurmd and munged for the session): one job per run, scancel and resume, pre-emption
with requeue, and two study processes at once training each run once. Skipped, with the
reason, where SLURM cannot run (not root, or slurm-wlm and munge not installed)."""

from __future__ import annotations

import os
import shutil
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
SMALL = ["cpus_per_task=1", "mem_gb=1"]


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
    patch.setenv("PATH", f"{state / 'bin'}:{os.environ['PATH']}")  # sacct answered from squeue: no accounting here
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
