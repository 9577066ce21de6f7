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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ablations import tracking
from ablations.plan import RunSpec
from core.paths import ROOT

HOST = socket.gethostname()
HOST_TAG, PID_TAG = "host", "pid"
SHOWN = ("epoch ", "resuming", "error")  # lines of a training process that a study prints


@dataclass
class Ended:
    code: int  # the training process's exit code; < 0: killed by that signal
    tail: str  # its last lines of output
    where: str = ""  # where its whole log is, when it is kept


def train_command(spec: RunSpec, run_id: str, config_dir: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "ablations.train", "--run-id", run_id]
    if config_dir is not None:
        cmd += ["--config-dir", str(config_dir)]
    if spec.profile:
        cmd += ["--profile", spec.profile]
    return cmd + spec.overrides


def reason(ended: Ended) -> str:
    """Why a training process failed, from its exit code and last lines."""
    if ended.code < 0:
        text = f"training process killed by signal {signal.Signals(-ended.code).name}"
    else:
        errors = [line for line in ended.tail.splitlines() if line.startswith("error:")]
        text = errors[-1] if errors else f"training process exited with code {ended.code}: " + ended.tail[-1000:]
    return text + (f" (log: {ended.where})" if ended.where else "")


class LocalLauncher:
    """Training processes on this machine, `parallel` at a time. With GPUs, each
    slot gets its own `gpus` devices through CUDA_VISIBLE_DEVICES; on the CPU the
    study gives each run its share of the cores (trainer.threads)."""

    name = "local"

    def __init__(self, parallel: int = 1, gpus: int = 0, config_dir: Path | None = None, say: Callable[[str], None] = print):
        self.slots, self.gpus, self.config_dir, self.say = max(1, parallel), gpus, config_dir, say
        self._procs: dict[int, subprocess.Popen] = {}
        self._free = list(range(self.slots))
        self._lock = threading.Lock()

    def _env(self, slot: int) -> dict[str, str]:
        env = dict(os.environ) | {"PYTHONUNBUFFERED": "1"}
        if self.gpus and self.slots > 1:
            visible = env.get("CUDA_VISIBLE_DEVICES")
            ids = visible.split(",") if visible else [str(i) for i in range(self.slots * self.gpus)]
            env["CUDA_VISIBLE_DEVICES"] = ",".join(ids[slot * self.gpus : (slot + 1) * self.gpus])
        return env

    def train(self, spec: RunSpec, run_id: str) -> Ended:
        with self._lock:
            slot = self._free.pop(0)
        try:
            proc = subprocess.Popen(
                train_command(spec, run_id, self.config_dir), cwd=ROOT, env=self._env(slot),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            )  # fmt: skip
            self._procs[proc.pid] = proc
            tracking.set_tags(run_id, {tracking.LAUNCHER: self.name, HOST_TAG: HOST, PID_TAG: proc.pid})
            tail: deque[str] = deque(maxlen=30)
            prefix = f"[{spec.name}] " if self.slots > 1 else "  "
            for line in proc.stdout:
                line = line.rstrip()
                tail.append(line)
                if line.startswith(SHOWN) or "Error" in line:
                    self.say(prefix + line)
            code = proc.wait()
            self._procs.pop(proc.pid, None)
            return Ended(code, "\n".join(tail))
        finally:
            with self._lock:
                self._free.append(slot)

    def stop(self) -> None:
        """Ctrl-C: each training process gets SIGINT, marks its run KILLED and exits."""
        procs = list(self._procs.values())
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def alive(run) -> bool:
    """Whether a RUNNING run's training process still exists. A local process on
    another host cannot be checked from here and counts as alive."""
    tags = run.data.tags
    if tags.get(HOST_TAG) != HOST:
        return tags.get(HOST_TAG) is not None
    try:
        return _pid_alive(int(tags.get(PID_TAG, "0")))
    except ValueError:
        return False
