"""LAUNCHER=slurm: each run of a study is a SLURM job, submitted through submitit.

The job runs `ablations.train` in its own Python process on the node (one task per
GPU: Lightning's SLURM environment makes them the ranks of one DDP run). A job that
is pre-empted or reaches its time limit gets SIGUSR2 from SLURM; submitit then
requeues it, and the new job resumes from the run's last checkpoint into the same
MLflow run (Lightning's own auto-requeue is off, so the two do not fight). A job
cancelled with scancel leaves its run KILLED; the next study resumes it. A job that
fails names its log in the run's failure reason.

The study follows its jobs through `slurm_state` (squeue, the jobs' result files; sacct
only where accounting works), not through submitit's sacct polling, which never learns
that a job has left the queue on a cluster without accounting. A job that SLURM keeps
pending for good (a request larger than every node, a partition limit) is cancelled and
its run FAILED; the study then exits 2.
"""

from __future__ import annotations

import contextlib
import math
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
from ablations.study.slurm_state import Fate, Follower, Queue, Request, largest, nodes
from core import paths
from core.config import build, parse_overrides, read_yaml, require
from core.errors import EXIT_INTERRUPTED, ConfigError

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
    poll_s: float = 10.0
    say_pending_s: float = 300.0
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        require(self.time_min >= 1, "time_min", self.time_min, ">= 1")
        require(self.poll_s > 0, "poll_s", self.poll_s, "> 0 seconds")
        require(self.say_pending_s > 0, "say_pending_s", self.say_pending_s, "> 0 seconds")
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
        self._stopping = threading.Event()  # set by stop(): followers stop waiting, nothing more is submitted
        self._queue = Queue(options.poll_s)
        self._refused: dict[str, str] = {}  # requests SLURM can never run -> why (later runs asking the same are not submitted)

    def _params(self, spec: RunSpec) -> dict[str, Any]:
        o, t = self.options, spec.config.trainer
        per_node = max(1, t.devices) if self.gpus else 1
        params: dict[str, Any] = {"timeout_min": o.time_min, "cpus_per_task": o.cpus_per_task, "tasks_per_node": per_node, "nodes": t.num_nodes}
        if o.cluster == "slurm":
            params |= {"mem_gb": o.mem_gb, "slurm_additional_parameters": {"requeue": True} | o.extra}
            params |= {"gpus_per_node": per_node} if self.gpus else {}
            params |= {"slurm_partition": o.partition} if o.partition else {}
            params |= {"slurm_account": o.account} if o.account else {}
        return params

    def _executor(self, spec: RunSpec, array: bool = False):
        import submitit

        o = self.options
        executor = submitit.AutoExecutor(folder=o.folder / "%j", cluster=None if o.cluster == "slurm" else "local")
        params = self._params(spec) | {"name": f"{spec.ablation}-{spec.name}"}
        params |= {"slurm_array_parallelism": o.max_running} if array and o.cluster == "slurm" else {}
        executor.update_parameters(**params)
        return executor

    def _asked(self, spec: RunSpec) -> Request:
        """What a run's job asks of each node, from the study's own options."""
        p = self._params(spec)
        return Request(
            p["cpus_per_task"] * p["tasks_per_node"], round(self.options.mem_gb * 1024), p.get("gpus_per_node", 0), p["nodes"], self.options.partition or ""
        )

    def _job(self, spec: RunSpec, run_id: str) -> TrainJob:
        env = {k: v for k, v in os.environ.items() if k.startswith(("MLFLOW_", "ABLATION_"))} | {"PYTHONUNBUFFERED": "1"}
        return TrainJob(train_command(spec, run_id, self.config_dir)[3:], env)

    def train(self, spec: RunSpec, run_id: str) -> Ended:
        if self.no_wait:
            with self._lock:
                self._queued.append((spec, run_id))
            return Ended(0, "", submitted=True)
        key = repr(sorted(self._params(spec).items()))
        if key in self._refused:
            return Ended(1, f"error: not submitted: {self._refused[key]}", refused=True)
        if self._stopping.is_set():
            return Ended(EXIT_INTERRUPTED, "study interrupted before this run was submitted")
        try:
            job = self._executor(spec).submit(self._job(spec, run_id))
        except Exception as err:  # sbatch refused it
            refused = _refusal(str(err))
            if refused is None:
                raise
            asked = self._asked(spec)
            why = f"sbatch refused the job: {refused}; it asks for {asked}"
            return self._refuse(key, Fate("FAILED", why, refused=True, request=asked, largest=largest(nodes(asked.partition))), spec)
        with self._lock:
            self._jobs[run_id] = job
            stopped = self._stopping.is_set()  # stop() ran after the check above: it did not see this job
        if stopped:
            job.cancel(check=False)
        tracking.set_tags(run_id, {tracking.LAUNCHER: self.name, JOB_TAG: job.job_id})
        self.say(f"  {spec.name}: slurm job {job.job_id}, log {job.paths.stdout}")
        follower = None
        if self.options.cluster == "slurm":
            self._queue.watch(job.job_id)
            say = lambda line: self.say(f"  {spec.name}: {line}")  # noqa: E731
            follower = Follower(job.job_id, job.paths.result_pickle, job.paths.stdout, self._queue, say, self.options.say_pending_s)
        fate: list[Fate] = []

        def waiting() -> bool:
            if self._stopping.is_set():
                return False
            if follower is None:
                return not job.done()
            fate.extend(f for f in [follower.check()] if f)
            return not fate

        try:
            tail = relay(follow(job.paths.stdout, waiting, poll_s=1), self.say, f"[{spec.name}] ")  # its epochs, as they come
            return self._ended(job, spec, key, fate[0] if fate else None, "\n".join(tail))
        finally:
            self._queue.forget(job.job_id)
            with self._lock:
                self._jobs.pop(run_id, None)

    def _ended(self, job, spec: RunSpec, key: str, fate: Fate | None, tail: str) -> Ended:
        log = str(job.paths.stdout)
        if not job.paths.result_pickle.exists():
            if self._stopping.is_set():
                return Ended(EXIT_INTERRUPTED, f"{tail}\nerror: study interrupted; it cancelled slurm job {job.job_id}".lstrip(), log)
            if fate is not None and fate.status != "done":
                if fate.refused:
                    return self._refuse(key, fate, spec, log)
                return Ended(EXIT_INTERRUPTED if fate.status == "KILLED" else 1, f"{tail}\nerror: {fate.why}".lstrip(), log)
        try:
            code = job.result()
        except Exception as err:  # the job's function raised, or submitit could not run it
            return Ended(1, f"{tail}\nerror: slurm job {job.job_id} failed: {type(err).__name__}".lstrip(), log)
        return Ended(int(code), tail, log)

    def _refuse(self, key: str, fate: Fate, spec: RunSpec, log: str = "") -> Ended:
        """A request SLURM can never run, with the fix; later runs asking the same are not submitted."""
        why = f"{fate.why}. {self._fix(fate, spec)}"
        self._refused[key] = why
        return Ended(1, f"error: {why}", log, refused=True)

    def _fix(self, fate: Fate, spec: RunSpec) -> str:
        o, node, req = self.options, fate.largest, fate.request
        if node is None:
            return 'Fix: ask for less (SLURM="cpus_per_task=N mem_gb=G", see configs/launchers/slurm.yaml) or name another partition (SLURM="partition=NAME")'
        if req is not None and node.fits(req):  # a limit of the partition or account holds it
            return 'Fix: see `scontrol show partition` for its limits, or name another (SLURM="partition=NAME account=NAME")'
        per_node = self._params(spec)["tasks_per_node"]
        cpus, mem = max(1, min(o.cpus_per_task, node.cpus // per_node)), min(o.mem_gb, math.floor(node.mem_mb / 1024 * 10) / 10)
        gpus = f", with at most GPUS={node.gpus}" if req is not None and req.gpus > node.gpus else ""
        fit = f'SLURM="cpus_per_task={cpus} mem_gb={mem:g}"{gpus}'
        return f'Fix: ask for at most what that node has, e.g. {fit}, or name a partition with larger nodes (SLURM="partition=NAME")'

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
        """Ctrl-C or SIGTERM: the followers stop waiting and the study's jobs are cancelled, in
        one scancel (their runs are marked KILLED; the next study resumes them)."""
        with self._lock:
            self._stopping.set()
            jobs = list(self._jobs.values())
        if not jobs:
            return
        if self.options.cluster == "slurm":
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(["scancel", *(job.job_id for job in jobs)], capture_output=True, timeout=20)
            return
        for job in jobs:
            with contextlib.suppress(Exception):  # the job ended meanwhile
                job.cancel(check=False)


# what sbatch says when it refuses a request that no node or partition can ever run
_REFUSALS = ("Requested node configuration is not available", "Memory specification can not be satisfied", "Invalid generic resource",
             "Invalid partition", "Invalid account", "Invalid qos", "Requested time limit is invalid", "More processors requested than permitted",
             "Node count specification invalid")  # fmt: skip


def _refusal(message: str) -> str | None:
    """sbatch's own words when it refused the job for good; None for any other failure."""
    lines = [line.removeprefix("sbatch: error: ").strip() for line in message.splitlines() if "error:" in line]
    return "; ".join(lines) if any(r.lower() in message.lower() for r in _REFUSALS) else None
