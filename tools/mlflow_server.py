"""A real `mlflow server` for tests and tools: SQLite (or PostgreSQL) behind it, on
127.0.0.1 and a free port, stopped with its workers; and a smoke study run against it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from core.paths import ROOT

# the server's background job runner (GenAI evaluation jobs) and telemetry are not needed here
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_executable() -> list[str]:
    """The `mlflow` command of this interpreter's environment (the venv's)."""
    exe = Path(sys.executable).with_name("mlflow")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("mlflow")
    return [found] if found else [sys.executable, "-m", "mlflow"]


class MlflowServer:
    """A real `mlflow server` process on 127.0.0.1:<free port>, stopped (with its
    worker processes) by stop() or on leaving a with block.

    backend_store_uri: e.g. sqlite:///path/mlflow.db. artifacts_dir: when given,
    the server stores and serves artifacts itself (--serve-artifacts), as `make
    server` does; without it, it serves a store whose runs keep local artifact
    paths, as `make ui` does."""

    def __init__(self, backend_store_uri: str, artifacts_dir: Path | None = None, port: int | None = None, log_path: Path | None = None):
        self.backend_store_uri = backend_store_uri
        self.artifacts_dir = artifacts_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._log = None

    def command(self) -> list[str]:
        cmd = mlflow_executable() + ["server", "--backend-store-uri", self.backend_store_uri, "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        if self.artifacts_dir is not None:
            cmd += ["--artifacts-destination", str(self.artifacts_dir), "--serve-artifacts"]
        return cmd

    def start(self, timeout: float = 120) -> MlflowServer:
        env = dict(os.environ) | SERVER_ENV
        env.pop("MLFLOW_TRACKING_URI", None)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "w")  # noqa: SIM115 (the server writes to it until stop())
        out = self._log or subprocess.DEVNULL
        # its own session, so that stop() reaches uvicorn's workers too
        if self.artifacts_dir is not None:
            self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        cwd = self.artifacts_dir.parent if self.artifacts_dir is not None else ROOT  # ROOT: relative artifact paths resolve as for `make ui`
        self.proc = subprocess.Popen(self.command(), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with code {self.proc.returncode} before answering /health{self._log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server on {self.url} did not answer /health within {timeout:.0f} s{self._log_tail()}")
            time.sleep(0.5)

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return ":\n" + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])

    def stop(self, timeout: float = 20) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if proc is not None:  # workers left behind by a server that exited on its own
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> MlflowServer:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_smoke_study(
    tracking_uri: str,
    study: str = "activation",
    seeds: int = 2,
    workdir: Path | None = None,
    timeout: float = 900,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """`python -m ablations.study STUDY --profile smoke --seeds N` into tracking_uri,
    with its checkpoints and report under workdir (and env added to its environment,
    e.g. ABLATION_CONFIGS); raises if it fails."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="ablation-screens-"))
    env = (
        dict(os.environ)
        | (env or {})
        | {
            "MLFLOW_TRACKING_URI": tracking_uri,
            "ABLATION_CHECKPOINTS": str(workdir / "checkpoints"),
            "ABLATION_REPORTS": str(workdir / "reports"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    cmd = [sys.executable, "-m", "ablations.study", study, "--profile", "smoke", "--seeds", str(seeds), *extra]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done
