"""Run an ablation study: every variant over several seeds, each in its own process.

    python -m ablations.study NAME [--profile P] [--seeds 3|0,1,2] [--gpus N]
                              [--parallel K] [--force] [key=value ...]

MLflow layout: experiment NAME; one parent run per invocation (tag `ablation`);
one child run per variant and seed, named `<variant>-seed<k>`, nested under the
parent. A (variant, seed) whose config already has a FINISHED run is skipped; an
interrupted one resumes from its checkpoint into the same run. A failing run is
marked FAILED with its reason and the others go on; the study then exits 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ablations import tracking
from ablations.config import CONFIG_DIR, ROOT, ConfigError
from ablations.spec import RunSpec, expand, load_ablation, parse_seeds

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
HOST = socket.gethostname()
PARENT_TAG = "mlflow.parentRunId"
_print_lock = threading.Lock()


@dataclass
class Outcome:
    spec: RunSpec
    run_id: str
    status: str  # FINISHED, SKIPPED, REUSED, FAILED, KILLED
    reason: str = ""
    seconds: float = 0.0


def _say(line: str) -> None:
    with _print_lock:
        print(line, flush=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(run) -> bool:
    """A RUNNING run whose training process on this host is gone (killed study)."""
    tags = run.data.tags
    if tags.get("host") != HOST:
        return False
    try:
        return not _alive(int(tags.get("pid", "0")))
    except ValueError:
        return True


def find_existing(client, experiment_id: str, spec: RunSpec) -> list:
    h = spec.config.hash()
    return tracking.retry(
        client.search_runs,
        [experiment_id],
        filter_string=f"tags.config_hash = '{h}' and tags.ablation = '{spec.ablation}' and tags.variant = '{spec.variant}'",
        max_results=100,
    )


def find_elsewhere(client, spec: RunSpec):
    """A FINISHED run of the same config in any experiment (e.g. the baseline,
    which every ablation shares), or None."""
    runs = tracking.retry(
        client.search_runs,
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.config_hash = '{spec.config.hash()}' and attributes.status = 'FINISHED'",
        max_results=50,
    )
    runs = [r for r in runs if "reused_from" not in r.data.tags]
    return runs[0] if runs else None


def copy_run(client, source, experiment_id: str, tags: dict[str, str], run_name: str) -> str:
    """Records a finished run of an identical config in this study: params, the
    full metric histories and the artifacts, with tag reused_from=<source run>."""
    from mlflow.entities import Metric, Param

    run = tracking.retry(client.create_run, experiment_id, tags=tags | {"reused_from": source.info.run_id}, run_name=run_name)
    run_id = run.info.run_id
    params = [Param(k, v) for k, v in source.data.params.items()]
    for i in range(0, len(params), 100):
        tracking.retry(client.log_batch, run_id, params=params[i : i + 100])
    metrics = [Metric(m.key, m.value, m.timestamp, m.step) for key in source.data.metrics for m in client.get_metric_history(source.info.run_id, key)]
    for i in range(0, len(metrics), 1000):
        tracking.retry(client.log_batch, run_id, metrics=metrics[i : i + 1000])
    with tempfile.TemporaryDirectory() as tmp:
        for item in client.list_artifacts(source.info.run_id):
            if item.path == "checkpoints":
                continue  # large, and kept with the source run
            local = client.download_artifacts(source.info.run_id, item.path, tmp)
            tracking.retry(client.log_artifact, run_id, local)
    tracking.retry(client.set_terminated, run_id, "FINISHED")
    return run_id


def plan_run(client, experiment_id: str, spec: RunSpec, force: bool) -> tuple[str, Optional[str]]:
    """Returns ("skip", run_id), ("resume", run_id), ("reuse", source_run_id) or ("new", None)."""
    from ablations.train import CHECKPOINT_ROOT

    existing = find_existing(client, experiment_id, spec)
    if not force:
        for run in existing:
            if run.info.status == "FINISHED":
                return "skip", run.info.run_id
    for run in existing:
        status = run.info.status
        if status == "RUNNING" and not _is_stale(run):
            continue  # another study is training it right now
        if status in ("RUNNING", "KILLED", "FAILED") and (CHECKPOINT_ROOT / run.info.run_id / "last.ckpt").exists() and not force:
            if run.data.tags.get("diverged") == "true":
                continue  # do not resume into a known divergence
            return "resume", run.info.run_id
        if status == "RUNNING":  # stale, nothing to resume from
            tracking.retry(client.set_tag, run.info.run_id, "failure_reason", "stale: its study was killed before the first checkpoint")
            tracking.retry(client.set_terminated, run.info.run_id, "KILLED")
    if not force:
        source = find_elsewhere(client, spec)
        if source is not None:
            return "reuse", source.info.run_id
    return "new", None


def _child_env(slot: int, parallel: int, gpus: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    if gpus and parallel > 1:
        visible = env.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(parallel * gpus)]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(ids[slot * gpus : (slot + 1) * gpus])
    return env


class Study:
    def __init__(self, name: str, profile: Optional[str], args: list[str], seeds: Optional[list[int]], gpus: int, parallel: int, force: bool, config_dir: Path = CONFIG_DIR):
        self.ablation = load_ablation(name, config_dir)
        self.profile, self.gpus, self.parallel, self.force = profile, gpus, max(1, parallel), force
        self.config_dir = config_dir
        self.args = list(args)
        extra = list(args)
        if self.parallel > 1 and not gpus and not any(a.startswith("trainer.threads=") for a in args):
            extra.append(f"trainer.threads={max(1, (os.cpu_count() or 1) // self.parallel)}")  # share the cores
        self.runs = expand(self.ablation, profile, extra, seeds, gpus, config_dir)
        self._procs: dict[int, subprocess.Popen] = {}
        self._stopping = False

    # ------------------------------------------------------------------ checks
    def preflight(self) -> None:
        """Everything that can be wrong with the input, found before any run starts."""
        from ablations.train import check_devices, resolved_sizes
        from data.datamodule import AblationDataModule
        from lightning_modules.networks import build_network

        tracking.configure()
        classes: dict[str, int] = {}
        for spec in self.runs:
            cfg = spec.config
            check_devices(cfg)
            key = repr(cfg.data) + str(resolved_sizes(cfg))
            if key not in classes:  # loads (and caches) each dataset once, in this process
                dm = AblationDataModule(cfg.data, resolved_sizes(cfg), seed=cfg.seed)
                dm.setup("fit")
                classes[key] = dm.num_classes
            build_network(cfg.model, cfg.model.num_classes or classes[key], resolved_sizes(cfg))

    # ------------------------------------------------------------------ running
    def _train(self, spec: RunSpec, run_id: str, slot: int) -> tuple[int, str]:
        cmd = [sys.executable, "-m", "ablations.train", "--run-id", run_id, "--config-dir", str(self.config_dir)]
        if self.profile:
            cmd += ["--profile", self.profile]
        cmd += spec.overrides  # the threads per run, when parallel, are among them
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=_child_env(slot, self.parallel, self.gpus), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        self._procs[proc.pid] = proc
        client = tracking.client()
        tracking.retry(client.set_tag, run_id, "pid", str(proc.pid))
        tracking.retry(client.set_tag, run_id, "host", HOST)
        tail: deque[str] = deque(maxlen=30)
        prefix = f"[{spec.name}] " if self.parallel > 1 else "  "
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            if line.startswith(("epoch ", "resuming", "error")) or "Error" in line:
                _say(prefix + line)
        code = proc.wait()
        self._procs.pop(proc.pid, None)
        return code, "\n".join(tail)

    def _one(self, spec: RunSpec, parent_id: str, experiment_id: str, slot_pool) -> Outcome:
        client = tracking.client()
        action, run_id = plan_run(client, experiment_id, spec, self.force)
        if action == "skip":
            _say(f"skip   {spec.name}: finished before (run {run_id})")
            return Outcome(spec, run_id, "SKIPPED")
        if self._stopping:
            return Outcome(spec, run_id or "", "KILLED", "study interrupted")
        tags = {
            PARENT_TAG: parent_id,
            "ablation": spec.ablation,
            "variant": spec.variant,
            "seed": str(spec.seed),
            "config_hash": spec.config.hash(),
            "git_commit": tracking.git_commit(),
            "profile": self.profile or "",
            "baseline": str(spec.variant == self.ablation.baseline).lower(),
        }
        if action == "reuse":
            new_id = copy_run(client, client.get_run(run_id), experiment_id, tags, spec.name)
            _say(f"reuse  {spec.name}: identical config finished in run {run_id}")
            return Outcome(spec, new_id, "REUSED")
        if action == "new":
            run = tracking.retry(client.create_run, experiment_id, tags=tags, run_name=spec.name)
            run_id = run.info.run_id
        else:
            for k, v in tags.items():
                tracking.retry(client.set_tag, run_id, k, v)
            tracking.retry(client.update_run, run_id, status="RUNNING")
        slot = slot_pool.get()
        try:
            _say(f"{'resume' if action == 'resume' else 'start'}  {spec.name} (run {run_id})")
            start = time.time()
            code, tail = self._train(spec, run_id, slot)
            seconds = time.time() - start
        finally:
            slot_pool.put(slot)
        run = tracking.retry(client.get_run, run_id)
        if code == 0 and run.info.status == "FINISHED":
            _say(f"done   {spec.name} in {seconds:.0f} s")
            return Outcome(spec, run_id, "FINISHED", seconds=seconds)
        reason = run.data.tags.get("failure_reason") or self._reason(code, tail)
        status = "KILLED" if self._stopping or code in (-signal.SIGINT, 130) else "FAILED"
        if run.info.status in ("RUNNING", "SCHEDULED") or not run.data.tags.get("failure_reason"):
            tracking.retry(client.set_tag, run_id, "failure_reason", reason[:4000])
            tracking.retry(client.set_terminated, run_id, status)
        if "NonFiniteLoss" in reason:
            tracking.retry(client.set_tag, run_id, "diverged", "true")
        _say(f"{status.lower():6} {spec.name}: {reason.splitlines()[-1] if reason else ''}")
        return Outcome(spec, run_id, status, reason, seconds)

    def _stop(self, futures) -> None:
        self._stopping = True
        for f in futures:
            f.cancel()
        for proc in list(self._procs.values()):
            proc.send_signal(signal.SIGINT)
        for proc in list(self._procs.values()):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    @staticmethod
    def _reason(code: int, tail: str) -> str:
        if code < 0:
            return f"training process killed by signal {signal.Signals(-code).name}"
        lines = [l for l in tail.splitlines() if l.startswith("error:")]
        return lines[-1] if lines else f"training process exited with code {code}: " + tail[-1000:]

    def run(self) -> int:
        import queue

        client = tracking.client()
        experiment_id = tracking.experiment_id(self.ablation.name)
        parent = tracking.retry(
            client.create_run,
            experiment_id,
            tags={"ablation": self.ablation.name, "study": "true", "profile": self.profile or "", "git_commit": tracking.git_commit(), "mlflow.note.content": self.ablation.description},
            run_name=f"{self.ablation.name}-{time.strftime('%Y%m%d-%H%M%S')}",
        )
        parent_id = parent.info.run_id
        tracking.retry(client.log_param, parent_id, "seeds", ",".join(str(s) for s in sorted({r.seed for r in self.runs})))
        tracking.retry(client.log_param, parent_id, "variants", ",".join(dict.fromkeys(r.variant for r in self.runs)))
        if self.args:  # the report's reproduce line repeats them
            tracking.retry(client.log_param, parent_id, "overrides", " ".join(self.args))
        n = len(self.runs)
        _say(f"study '{self.ablation.name}': {n} runs ({len(self.ablation.variants)} variants x {n // len(self.ablation.variants)} seeds), parent run {parent_id}, store {tracking.tracking_uri()}")
        slots: queue.Queue = queue.Queue()
        for i in range(self.parallel):
            slots.put(i)
        outcomes: list[Outcome] = []
        interrupted = False
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            futures = [pool.submit(self._one, spec, parent_id, experiment_id, slots) for spec in self.runs]
            try:
                for f in futures:
                    while True:
                        try:
                            outcomes.append(f.result(timeout=0.5))
                            break
                        except TimeoutError:
                            continue
            except KeyboardInterrupt:
                interrupted = True
                self._stop(futures)
        tracking.retry(client.set_tag, parent_id, "child_runs", ",".join(o.run_id for o in outcomes if o.run_id))
        failed = [o for o in outcomes if o.status in ("FAILED", "KILLED")]
        if interrupted:
            tracking.retry(client.set_terminated, parent_id, "KILLED")
            _say(f"study '{self.ablation.name}' interrupted; run the same command again to resume it")
            return EXIT_INTERRUPTED
        try:
            from ablations.report import write_report

            path = write_report(self.ablation.name, parent_id=parent_id, config_dir=self.config_dir)
            _say(f"report: {path}")
        except Exception as err:  # the runs are safe in MLflow; say why the report is missing
            _say(f"report failed: {type(err).__name__}: {err}")
            failed.append(Outcome(self.runs[0], parent_id, "FAILED", f"report: {err}"))
        tracking.retry(client.set_terminated, parent_id, "FAILED" if failed else "FINISHED")
        count = {s: sum(o.status == s for o in outcomes) for s in ("FINISHED", "SKIPPED", "REUSED")}
        _say(
            f"study '{self.ablation.name}': {count['FINISHED']} trained, {count['SKIPPED']} skipped (finished before), "
            f"{count['REUSED']} reused (same config finished in another study), {len(failed)} failed"
        )
        for o in failed:
            _say(f"  FAILED {o.spec.name} (run {o.run_id}): {o.reason.splitlines()[-1] if o.reason else ''}")
        return EXIT_FAILED if failed else 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="a file in configs/ablations/ without .yaml")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides for every variant")
    parser.add_argument("--profile", default=None)
    parser.add_argument("--seeds", default=None, help="how many (3) or which (0,1,2)")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per run (DDP when > 1)")
    parser.add_argument("--parallel", type=int, default=1, help="runs at the same time")
    parser.add_argument("--force", action="store_true", help="train every run again, even finished ones")
    parser.add_argument("--config-dir", type=Path, default=CONFIG_DIR)
    args = parser.parse_intermixed_args(argv)
    try:
        seeds = parse_seeds(args.seeds, "SEEDS") if args.seeds else None
        study = Study(args.name, args.profile, args.overrides, seeds, args.gpus, args.parallel, args.force, args.config_dir)
        study.preflight()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return study.run()


if __name__ == "__main__":
    sys.exit(main())
