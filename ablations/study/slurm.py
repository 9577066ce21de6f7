"""LAUNCHER=slurm: each run of a study is a SLURM job, submitted through submitit.

The job runs `ablations.train` in its own Python process on the node (one task per
GPU: Lightning's SLURM environment makes them the ranks of one DDP run). A job that
is pre-empted or reaches its time limit gets SIGUSR2 from SLURM; submitit then
requeues it, and the new job resumes from the run's last checkpoint into the same
MLflow run (Lightning's own auto-requeue is off, so the two do not fight). A job
cancelled with scancel leaves its run KILLED; the next study resumes it. A job that
fails names its log in the run's failure reason.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ablations import tracking
from ablations.study.launch import Ended, follow, relay, train_command
from ablations.study.plan import RunSpec
from core import paths
from core.config import build, parse_overrides, read_yaml, require
from core.errors import ConfigError

JOB_TAG = "slurm_job_id"
LIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED"}


@dataclass
class SlurmConfig:
    partition: str | None = None
    account: str | None = None
    time_min: int = 1440
    mem_gb: float = 16.0
    cpus_per_task: int = 4
    max_running: int = 16
    logs: str = "slurm-logs"
    cluster: Literal["slurm", "local"] = "slurm"
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        require(self.time_min >= 1, "time_min", self.time_min, ">= 1")
        require(self.mem_gb > 0, "mem_gb", self.mem_gb, "> 0")
        require(self.cpus_per_task >= 1, "cpus_per_task", self.cpus_per_task, ">= 1")
        require(self.max_running >= 1, "max_running", self.max_running, ">= 1")

    @property
    def folder(self) -> Path:
        logs = Path(os.environ.get("ABLATION_SLURM_LOGS") or self.logs)
        return logs if logs.is_absolute() else paths.ROOT / logs


def load_slurm_config(overrides: list[str], config_dir: Path | None = None) -> SlurmConfig:
    """configs/launchers/slurm.yaml, then `key=value` overrides (SLURM="...")."""
    path = (config_dir or paths.config_dir()) / "launchers" / "slurm.yaml"
    tree = read_yaml(path) if path.is_file() else {}
    tree |= parse_overrides(overrides)
    try:
        return build(SlurmConfig, tree, "slurm.")
    except ConfigError as err:
        raise ConfigError(f"{err} (in {path} or SLURM=...)") from None


class TrainJob:
    """What a SLURM job runs: `python -m ablations.train ARGS`, in the job's process.
    Pickled by submitit; `checkpoint` is what submitit calls on pre-emption or timeout:
    the same job again, which resumes from the run's last checkpoint."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.args, self.env = args, env

    def __call__(self) -> int:
        from ablations.train.run import main
        from core.errors import run_command

        os.environ.update(self.env)
        os.chdir(paths.ROOT)
        return run_command(lambda: main(self.args))

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(TrainJob(self.args, self.env))


def job_alive(tags: dict[str, str]) -> bool:
    """Whether the run's SLURM job is queued or running (squeue); True when squeue cannot
    say (not on the cluster's login node), so that a live run is never retrained."""
    job = tags.get(JOB_TAG)
    if not job:
        return False
    try:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return True
    if out.returncode != 0:
        return "Invalid job id" not in out.stderr
    return any(state.strip() in LIVE_STATES for state in out.stdout.splitlines())


class SlurmLauncher:
    """Runs each planned run as a SLURM job (through submitit), at most `max_running` at
    once, and waits for it; with no_wait, submits them all as one job array and returns."""

    name = "slurm"

    def __init__(self, options: SlurmConfig, gpus: int = 0, config_dir: Path | None = None, say: Callable[[str], None] = print, no_wait: bool = False):
        self.options, self.gpus, self.config_dir, self.say, self.no_wait = options, gpus, config_dir, say, no_wait
        self.slots = options.max_running
        self._jobs: dict[str, Any] = {}
        self._queued: list[tuple[RunSpec, str]] = []  # no_wait: submitted together by flush()
        self._lock = threading.Lock()

    def _executor(self, spec: RunSpec, array: bool = False):
        import submitit

        o, t = self.options, spec.config.trainer
        executor = submitit.AutoExecutor(folder=o.folder / "%j", cluster=None if o.cluster == "slurm" else "local")
        per_node = max(1, t.devices) if self.gpus else 1
        params: dict[str, Any] = {
            "timeout_min": o.time_min,
            "cpus_per_task": o.cpus_per_task,
            "tasks_per_node": per_node,
            "nodes": t.num_nodes,
            "name": f"{spec.ablation}-{spec.name}",
        }
        if o.cluster == "slurm":
            params |= {"mem_gb": o.mem_gb, "slurm_additional_parameters": {"requeue": True} | o.extra}
            params |= {"gpus_per_node": per_node} if self.gpus else {}
            params |= {"slurm_partition": o.partition} if o.partition else {}
            params |= {"slurm_account": o.account} if o.account else {}
            params |= {"slurm_array_parallelism": o.max_running} if array else {}
        executor.update_parameters(**params)
        return executor

    def _job(self, spec: RunSpec, run_id: str) -> TrainJob:
        env = {k: v for k, v in os.environ.items() if k.startswith(("MLFLOW_", "ABLATION_"))} | {"PYTHONUNBUFFERED": "1"}
        return TrainJob(train_command(spec, run_id, self.config_dir)[3:], env)

    def train(self, spec: RunSpec, run_id: str) -> Ended:
        if self.no_wait:
            with self._lock:
                self._queued.append((spec, run_id))
            return Ended(0, "", submitted=True)
        job = self._executor(spec).submit(self._job(spec, run_id))
        with self._lock:
            self._jobs[run_id] = job
        tracking.set_tags(run_id, {tracking.LAUNCHER: self.name, JOB_TAG: job.job_id})
        self.say(f"  {spec.name}: slurm job {job.job_id}, log {job.paths.stdout}")
        tail = relay(follow(job.paths.stdout, lambda: not job.done(), poll_s=2), self.say, f"[{spec.name}] ")  # its epochs, as they come
        try:
            code = job.result()
        except Exception as err:  # cancelled, killed, failed without a result
            return Ended(1, "\n".join([*tail, f"error: slurm job {job.job_id} ended {job.state}: {type(err).__name__}"]), str(job.paths.stdout))
        finally:
            with self._lock:
                self._jobs.pop(run_id, None)
        return Ended(int(code), "\n".join(tail), str(job.paths.stdout))

    def flush(self) -> list[str]:
        """no_wait: submits the queued runs as one job array (at most max_running at once)."""
        if not self._queued:
            return []
        executor = self._executor(self._queued[0][0], array=True)
        executor.update_parameters(name=f"{self._queued[0][0].ablation}-study")
        with executor.batch():
            jobs = [executor.submit(self._job(spec, run_id)) for spec, run_id in self._queued]
        for (spec, run_id), job in zip(self._queued, jobs, strict=True):
            tracking.set_tags(run_id, {tracking.LAUNCHER: self.name, JOB_TAG: job.job_id})
            self.say(f"  {spec.name}: slurm job {job.job_id}, log {job.paths.stdout}")
        self._queued = []
        return [job.job_id for job in jobs]

    def stop(self) -> None:
        """Ctrl-C: cancels the study's jobs (their runs are marked KILLED; the next study resumes them)."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            with contextlib.suppress(Exception):  # the job ended meanwhile
                job.cancel(check=False)
