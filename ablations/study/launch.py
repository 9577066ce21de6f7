"""Running a study's runs: where each training process starts and how it is watched.

A launcher trains one planned run into its MLflow run and blocks until it ends; the
study calls it from as many threads as runs may go at once. `LocalLauncher` starts
`python -m ablations.train` processes on this machine. Each records on the run how to find its process
again (tag `launcher` and the launcher's own tags), so that a later study can tell
a live RUNNING run from one whose process is gone, whichever launcher started it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ablations import tracking
from ablations.study.plan import RunSpec
from core import paths
from core.errors import EXIT_INTERRUPTED
from core.paths import ROOT

HOST = socket.gethostname()
HOST_TAG, PID_TAG = "host", "pid"
SHOWN = ("epoch ", "resuming", "error")  # lines of a training process that a study prints


@dataclass
class Ended:
    code: int  # the training process's exit code; < 0: killed by that signal
    tail: str  # its last lines of output
    where: str = ""  # where its whole log is, when it is kept
    submitted: bool = False  # handed to a cluster's queue, not waited for
    refused: bool = False  # the cluster can never run it as asked (too large for every node): the study exits 2


def follow(log: Path, running: Callable[[], bool], poll_s: float = 0.2) -> Iterator[str]:
    """The lines another process writes to `log`, as they come, until `running()` is false
    and the rest is read. A log that does not exist yet is waited for."""
    partial, f = "", None
    try:
        while True:
            ended = not running()  # asked before reading: what it wrote before it ended is read below
            if f is None and log.exists():
                f = open(log, encoding="utf-8", errors="replace")  # noqa: SIM115 (closed below)
            text = f.read() if f else ""
            *lines, partial = (partial + text).split("\n")  # an unfinished last line waits for its end
            yield from lines
            if ended:
                if partial:
                    yield partial
                return
            if not text:
                time.sleep(poll_s)
    finally:
        if f is not None:
            f.close()


def relay(lines: Iterable[str], say: Callable[[str], None], prefix: str) -> deque[str]:
    """Prints the lines of a training process a study shows (epochs, resumes, errors),
    each after `prefix`, and returns its last 30 lines."""
    tail: deque[str] = deque(maxlen=30)
    for line in lines:
        line = line.rstrip()
        tail.append(line)
        if line.startswith(SHOWN) or "Error" in line:
            say(prefix + line)
    return tail


def train_command(spec: RunSpec, run_id: str, config_dir: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "ablations.train", "--run-id", run_id]
    if config_dir is not None:
        cmd += ["--config-dir", str(config_dir)]
    if spec.profile:
        cmd += ["--profile", spec.profile]
    return cmd + spec.overrides


def reason(ended: Ended, own: str | None = None) -> str:
    """Why a training process failed: the reason it gave itself (`own`), or one read from
    its exit code and last lines; with where its whole log is."""
    if own:
        text = own
    elif ended.code < 0:
        text = f"training process killed by signal {signal.Signals(-ended.code).name}"
    else:
        errors = [line for line in ended.tail.splitlines() if line.startswith("error:")]
        text = errors[-1] if errors else f"training process exited with code {ended.code}: " + ended.tail[-1000:]
    return text + (f" (log: {ended.where})" if ended.where else "")


class LocalLauncher:
    """Training processes on this machine, `parallel` at a time. With GPUs, each
    slot gets its own `gpus` devices through CUDA_VISIBLE_DEVICES (shared when there
    are fewer than parallel x gpus); on the CPU the study gives each run its share of
    the cores (trainer.threads)."""

    name = "local"

    def __init__(self, parallel: int = 1, gpus: int = 0, config_dir: Path | None = None, say: Callable[[str], None] = print):
        self.slots, self.gpus, self.config_dir, self.say = max(1, parallel), gpus, config_dir, say
        self._procs: dict[int, subprocess.Popen | _Forked] = {}
        self._free = list(range(self.slots))
        self._lock = threading.Lock()
        self._stopped = False  # set by stop(): no process starts after it

    def _env(self, slot: int) -> dict[str, str]:
        """Slot k gets GPUs k*gpus .. (k+1)*gpus - 1 of those visible; with fewer GPUs than
        slots need, the slots share them round-robin (several small runs on one GPU)."""
        env = dict(os.environ) | {"PYTHONUNBUFFERED": "1"}
        if self.gpus and self.slots > 1:
            visible = env.get("CUDA_VISIBLE_DEVICES")
            ids = visible.split(",") if visible else [str(i) for i in range(_gpu_count())]
            if ids:
                start = (slot * self.gpus) % len(ids)
                env["CUDA_VISIBLE_DEVICES"] = ",".join(ids[(start + i) % len(ids)] for i in range(min(self.gpus, len(ids))))
        return env

    def _start(self, spec: RunSpec, run_id: str, slot: int):
        """A process training the run: forked from a server that has torch, Lightning and
        MLflow imported already (seconds saved per run); a multi-process (DDP) run as a
        new `python -m ablations.train`, since Lightning starts its other ranks by
        running the same command line again."""
        command = train_command(spec, run_id, self.config_dir)
        if spec.config.trainer.devices * spec.config.trainer.num_nodes == 1:
            return _Forked(command[3:], self._env(slot), paths.checkpoint(run_id).parent / "train.log")
        return subprocess.Popen(command, cwd=ROOT, env=self._env(slot), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)

    def train(self, spec: RunSpec, run_id: str) -> Ended:
        with self._lock:
            slot = self._free.pop(0)
        try:
            with self._lock:  # a process starts before stop() looks, or not at all
                if self._stopped:
                    return Ended(-signal.SIGINT, "study interrupted before this run started")
                proc = self._start(spec, run_id, slot)
                self._procs[proc.pid] = proc
            tracking.set_tags(run_id, {tracking.LAUNCHER: self.name, HOST_TAG: HOST, PID_TAG: proc.pid})
            tail = relay(proc.stdout, self.say, f"[{spec.name}] " if self.slots > 1 else "  ")
            code = proc.wait()
            self._procs.pop(proc.pid, None)
            return Ended(code, "\n".join(tail))
        finally:
            with self._lock:
                self._free.append(slot)

    def flush(self) -> list[str]:
        """Nothing is held back to submit: every run was waited for."""
        return []

    def stop(self) -> None:
        """Ctrl-C: each training process gets SIGINT, marks its run KILLED and exits."""
        with self._lock:
            self._stopped = True
            procs = list(self._procs.values())
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


class _Forked:
    """`python -m ablations.train ARGS` as a child of a fork server that preloaded the
    heavy imports; Popen's interface as far as the launcher uses it. Its output goes to
    `log` (kept beside the run's checkpoint), which `stdout` follows line by line."""

    PRELOAD = ["ablations.train.run", "ablations.train.assemble", "lightning.pytorch", "mlflow", "torchvision"]

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        import multiprocessing

        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(self.PRELOAD)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_bytes(b"")
        self.log = log
        self.process = ctx.Process(target=_train_in_child, args=(args, env, str(ROOT), str(log)), daemon=False)
        self.process.start()
        self.pid = self.process.pid

    @property
    def stdout(self):
        """The child's output lines as they come, until it has exited and all is read."""
        return follow(self.log, self.process.is_alive)

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired("ablations.train", timeout)
        return self.process.exitcode

    def send_signal(self, sig: int) -> None:
        if self.process.is_alive():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _train_in_child(args: list[str], env: dict[str, str], cwd: str, log: str) -> None:
    """In the forked child: the environment, directory and output a new process would
    have, then ablations.train's main; its exit code is the process's."""
    # a fork server ignores SIGINT and its children inherit that until main sets a handler:
    # a study stopping this run in that window would have to wait for its SIGKILL fallback
    signal.signal(signal.SIGINT, signal.default_int_handler)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (the process's stdout)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = ["ablations.train", *args]
    from ablations.train.run import main
    from core.errors import run_command

    try:
        code = run_command(lambda: main(args))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except KeyboardInterrupt:  # stopped before main could catch it (while reading its config)
        code = EXIT_INTERRUPTED
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


CLAIM_TTL_S = 600  # a run a study created but has not started a process for yet counts as claimed this long


def alive(run) -> bool:
    """Whether a RUNNING run's local training process still exists. A run created by a
    study that has not started its process yet (or is copying it) is a claim, alive for CLAIM_TTL_S; a
    process on another host cannot be checked from here and counts as alive."""
    tags = run.data.tags
    if tracking.LAUNCHER not in tags:  # a copy in progress counts from when it was copied (it has its source's start time)
        since = float(tags.get(tracking.COPIED_AT) or run.info.start_time / 1000)
        return time.time() - since < CLAIM_TTL_S
    if tags.get(HOST_TAG) != HOST:
        return tags.get(HOST_TAG) is not None
    try:
        return _pid_alive(int(tags.get(PID_TAG, "0")))
    except ValueError:
        return False


@contextmanager
def sigterm_as_ctrl_c():
    """`kill`, `timeout` and a batch system's cancel send SIGTERM: the study then stops its
    runs as on Ctrl-C, instead of dying and leaving its training processes running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
