"""Run an ablation study: every variant over several seeds, each in its own process.

    python -m ablations.study NAME [--profile P] [--seeds 3|0,1,2|auto] [--gpus N] [--parallel K]
                              [--force] [--tune] [--launcher local|slurm] [--slurm "k=v ..."]
                              [--no-wait] [--config-dir DIR] [key=value ...]

MLflow layout: experiment NAME; one parent run per invocation (tag `study`);
one child run per variant and seed, named `<variant>-seed<k>`, nested under the
parent. A (variant, seed) whose config already has a FINISHED run is skipped; an
interrupted one resumes from its checkpoint into the same run. A failing run is
marked FAILED with its reason and the others go on; the study then exits 1.
With adaptive seeds (--seeds auto, or seeds: {min, max} in the file) the runs train in
rounds (ablations.study.adaptive).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from ablations import tracking
from ablations.spec import load_ablation, parse_seeds
from ablations.study import adaptive, launch, slurm, tuning
from ablations.study.launch import Ended, LocalLauncher, reason, sigterm_as_ctrl_c
from ablations.study.outcome import HAS_RESULT, Outcome, Status
from ablations.study.plan import RunSpec, claim, decide, expand, expand_tuning, run_tags
from ablations.train import assemble
from core.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, ConfigError, run_command

_print_lock = threading.Lock()
STOP_GRACE_S = 20  # after Ctrl-C or SIGTERM, how long the study waits for its runs to be marked KILLED


def say(line: str) -> None:
    with _print_lock:
        print(line, flush=True)


def _alive(run) -> bool:
    """Whether a RUNNING run's process (or cluster job) still exists, whichever launcher started it."""
    if run.data.tags.get(tracking.LAUNCHER) == slurm.SlurmLauncher.name:
        return slurm.job_alive(run.data.tags)
    return launch.alive(run)


class TuningFailed(Exception):
    """Tuning left a variant without a value to train it at."""


class Executor:
    """Trains planned runs into a study: for each, what the tracking store says to do (skip,
    resume, reuse, train anew, wait for another process), the launcher, and the outcome."""

    def __init__(self, ablation, launcher, force: bool):
        self.ablation, self.launcher, self.force = ablation, launcher, force
        self.stopping = False

    def one(self, spec: RunSpec, parent_id: str, experiment_id: str) -> Outcome:
        decision = decide(spec, experiment_id, self.force, _alive)
        if decision.action == "skip":
            say(f"skip   {spec.name}: finished before (run {decision.run_id})")
            return Outcome(spec, decision.run_id, Status.SKIPPED)
        if decision.action == "busy":
            return self._wait_for(spec, decision.run_id)
        if self.stopping:
            return Outcome(spec, decision.run_id or "", Status.KILLED, "study interrupted")
        tags = run_tags(spec, parent_id, self.ablation)
        if decision.action == "reuse":
            run_id = tracking.copy_run(decision.run_id, experiment_id, spec.name, tags)
            say(f"reuse  {spec.name}: identical config finished in run {decision.run_id}")
            return Outcome(spec, run_id, Status.REUSED)
        if decision.action == "new":
            run_id = tracking.create_run(experiment_id, spec.name, tags)
            winner = claim(spec, experiment_id, run_id, _alive)
            if winner is not None:
                return self._wait_for(spec, winner)
        else:
            run_id = decision.run_id
            tracking.set_tags(run_id, tags)
            tracking.set_running(run_id)
        say(f"{'resume' if decision.action == 'resume' else 'start'}  {spec.name} (run {run_id})")
        start = time.time()
        try:
            ended = self.launcher.train(spec, run_id)
        except Exception as err:  # its process could not start: this run fails, the others go on
            ended = Ended(1, f"error: its training process could not start: {type(err).__name__}: {err}")
        return self._settle(spec, run_id, ended, time.time() - start)

    def guarded(self, spec: RunSpec, parent_id: str, experiment_id: str) -> Outcome:
        """`one`, with any error it did not expect (the store refusing a write) made that
        run's FAILED outcome: the other runs go on."""
        try:
            return self.one(spec, parent_id, experiment_id)
        except Exception as err:
            why = f"{type(err).__name__}: {err}"
            say(f"failed {spec.name}: {why}")
            return Outcome(spec, "", Status.FAILED, why)

    def _wait_for(self, spec: RunSpec, run_id: str) -> Outcome:
        """Another study process trains this run: wait for it to end, and count its outcome."""
        say(f"busy   {spec.name}: another process is training it (run {run_id}); waiting for it")
        while not self.stopping:
            run = tracking.get_run(run_id)
            if run.info.status != "RUNNING" or not _alive(run):
                break
            time.sleep(5)
        status = tracking.get_run(run_id).info.status  # again: it may have finished the run just before its process ended
        if status == "FINISHED":
            return Outcome(spec, run_id, Status.BUSY)
        return Outcome(spec, run_id, Status.FAILED, f"trained by another study process, which ended it {status}")

    def _settle(self, spec: RunSpec, run_id: str, ended: Ended, seconds: float) -> Outcome:
        """The outcome of a training process, and the run marked accordingly."""
        if ended.submitted:
            return Outcome(spec, run_id, Status.SUBMITTED)
        run = tracking.get_run(run_id)
        if ended.code == 0 and run.info.status == "FINISHED":
            say(f"done   {spec.name} in {seconds:.0f} s")
            return Outcome(spec, run_id, Status.FINISHED)
        own = run.data.tags.get(tracking.FAILURE)  # the training process ended the run itself
        why = reason(ended, own)
        status = Status.KILLED if self.stopping or ended.code in (-signal.SIGINT, EXIT_INTERRUPTED) else Status.FAILED
        if not tracking.mark_ended(run_id, status.value, why, only_if_running=bool(own)) and why != own:
            tracking.set_tags(run_id, {tracking.FAILURE: why[:4000]})  # its reason, with where its log is
        if "NonFiniteLoss" in why:
            tracking.set_tags(run_id, {tracking.DIVERGED: "true"})
        say(f"{status.lower():6} {spec.name}: {why.splitlines()[-1] if why else ''}")
        return Outcome(spec, run_id, status, why, ended.refused)

    def run_all(self, specs: list[RunSpec], parent_id: str, experiment_id: str) -> tuple[list[Outcome], bool]:
        """Every run in `specs`, `slots` at a time; on Ctrl-C or SIGTERM the running ones are stopped.
        The runs go on daemon threads that the study never joins without a time limit: a
        thread still waiting on its job or the store cannot keep the process alive."""
        todo: queue.SimpleQueue[RunSpec | None] = queue.SimpleQueue()
        done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        busy: dict[int, RunSpec] = {}  # thread ident -> the spec it runs

        def worker() -> None:
            while (spec := todo.get()) is not None:
                busy[threading.get_ident()] = spec
                done.put(self.guarded(spec, parent_id, experiment_id))
                busy.pop(threading.get_ident(), None)  # after its outcome is in `done`

        for spec in specs:
            todo.put(spec)
        for _ in range(min(self.launcher.slots, len(specs))):
            todo.put(None)
            threading.Thread(target=worker, name="study-run", daemon=True).start()
        outcomes: list[Outcome] = []
        with sigterm_as_ctrl_c():
            try:
                while len(outcomes) < len(specs):
                    with contextlib.suppress(queue.Empty):
                        outcomes.append(done.get(timeout=0.5))
            except KeyboardInterrupt:
                self.stopping = True
                with contextlib.suppress(queue.Empty):  # the runs not started yet are not started
                    while True:
                        todo.get_nowait()
                for _ in range(self.launcher.slots):
                    todo.put(None)
                with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C skips the wait below
                    self.launcher.stop()
                    deadline = time.monotonic() + STOP_GRACE_S
                    while busy and time.monotonic() < deadline:
                        with contextlib.suppress(queue.Empty):
                            outcomes.append(done.get(timeout=0.2))
                while not done.empty():
                    outcomes.append(done.get())
                why = f"study interrupted; its run did not stop within {STOP_GRACE_S} s"
                outcomes += [Outcome(spec, "", Status.KILLED, why) for spec in list(busy.values())]
                return outcomes, True
        order = {id(spec): i for i, spec in enumerate(specs)}
        return sorted(outcomes, key=lambda o: order[id(o.spec)]), False


def only(ablation, variants: list[str]):
    """The ablation restricted to `variants`, with the baseline and each one's reference (VARIANTS=a,b)."""
    unknown = [v for v in variants if v not in ablation.variants]
    if unknown or ablation.design is not None:
        why = "a factorial study runs all its cells" if ablation.design is not None else f"no variant {', '.join(unknown)} in {ablation.path}"
        raise ConfigError(f"VARIANTS={','.join(variants)}: {why}; its variants are {', '.join(ablation.variants)}")
    keep = {ablation.baseline, *variants, *(ablation.reference(v) for v in variants)}
    return replace(ablation, variants={k: v for k, v in ablation.variants.items() if k in keep},
                   compare={k: r for k, r in ablation.compare.items() if k in keep})  # fmt: skip


class Study:
    def __init__(self, name: str, profile: str | None = None, args: list[str] | None = None, seeds: list[int] | None = None,
                 gpus: int = 0, parallel: int = 1, force: bool = False, config_dir: Path | None = None, launcher=None,
                 tune: bool = False, auto: bool = False, variants: list[str] | None = None):  # fmt: skip
        self.ablation = only(load_ablation(name, config_dir), variants) if variants else load_ablation(name, config_dir)
        self.adaptive = adaptive.bounds(self.ablation, seeds, auto, getattr(launcher, "no_wait", False))  # None: fixed seeds
        seeds = adaptive.first_seeds(self.adaptive) if self.adaptive else seeds  # adaptive: round 1's
        self.profile = profile or self.ablation.profile  # the file's own, unless PROFILE says otherwise
        self.gpus, self.config_dir = gpus, config_dir
        self.args = list(args or [])
        self.launcher = launcher or LocalLauncher(parallel, gpus, config_dir, say)
        run_args = list(self.args)
        if self.launcher.name == "local" and self.launcher.slots > 1 and not gpus and not any(a.startswith("trainer.threads=") for a in run_args):
            run_args.append(f"trainer.threads={max(1, (os.cpu_count() or 1) // self.launcher.slots)}")  # share the cores
        if tune and self.ablation.tune is None:
            raise ConfigError(f"ablation '{name}' has no tune: block to tune with; add one to {self.ablation.path} (README: Tuning) or leave TUNE unset")
        self.tune = self.ablation.tune if tune else None
        self.run_args, self.seeds, self.tuned = run_args, seeds, {}
        self.runs = expand(self.ablation, self.profile, run_args, seeds, gpus, config_dir)
        self.tuning_runs: list[RunSpec] = []
        if self.tune:  # every candidate's config (the grid, or the ends of Optuna's ranges) is checked before anything runs
            grid = {v: tuning.grid(self.tune) for v in self.ablation.variants}
            self.tuning_runs = expand_tuning(self.ablation, grid, self.profile, run_args, gpus, config_dir)
        self.executor = Executor(self.ablation, self.launcher, force)

    def preflight(self) -> None:
        """Everything that can be wrong with the input, found before any run starts:
        devices, the store, the data (loaded once per data config) and the networks, for the
        study's runs and its tuning runs (whose budget may change the data)."""
        from lightning_modules.networks import build_network

        tracking.configure()
        classes: dict[str, int] = {}
        for spec in self.runs + self.tuning_runs:
            cfg = spec.config
            assemble.check_devices(cfg)
            key = repr(cfg.data) + str(assemble.image_size(cfg))
            if key not in classes:  # loads (and caches) each dataset once, in this process
                dm = assemble.datamodule(cfg)
                dm.setup("fit")
                classes[key] = dm.num_classes
            build_network(cfg.model, cfg.model.num_classes or classes[key], assemble.image_size(cfg))

    def _tune(self, parent_id: str, experiment_id: str) -> tuple[dict[str, dict], bool]:
        """Trains the tuning runs (all of the grid, or Optuna's candidates round by round)
        and returns each variant's chosen values."""
        t, variants = self.tune, list(self.ablation.variants)
        say(f"tuning {', '.join(t.space)} ({t.search}, objective {t.objective}{f' to {t.target:g}' if t.objective != 'val_err1' else ''}) "
            f"for {'each variant' if t.per_variant else 'all variants together'}")  # fmt: skip
        outcomes: list[Outcome] = []
        search = tuning.OptunaSearch(t, variants) if t.search == "optuna" else None
        asked = None if search else {v: tuning.grid(t) for v in variants}
        while True:
            if search:
                search.tell(tuning.candidates([tracking.get_run(o.run_id) for o in outcomes if o.status in HAS_RESULT], t))
                asked = search.ask()
            if not asked:
                break
            specs = expand_tuning(self.ablation, asked, self.profile, self.run_args, self.gpus, self.config_dir)
            more, interrupted = self.executor.run_all(specs, parent_id, experiment_id)
            outcomes += more
            if interrupted:
                return {}, True
            asked = None
        runs = [tracking.get_run(o.run_id) for o in outcomes if o.run_id]
        tracking.set_tags(parent_id, {tracking.TUNING_RUNS: ",".join(r.info.run_id for r in runs)})
        chosen = tuning.choose(tuning.candidates(runs, t), t, variants)
        missing = [v for v in variants if v not in chosen]
        if missing:
            raise TuningFailed(
                f"tuning found no usable value for {', '.join(missing)}: each candidate failed (see the tuning runs' "
                "failure_reason tags) or is being trained by another study process; widen or move tune.space, or wait for it"
            )
        tracking.log_params(parent_id, {f"tuned.{v}.{k}": value for v, values in chosen.items() for k, value in values.items()})
        for v, values in chosen.items():
            say(f"tuned  {v}: " + ", ".join(f"{k}={value:g}" if isinstance(value, float) else f"{k}={value}" for k, value in values.items()))
        for warning in tuning.at_edge(t, chosen):
            say(f"warning: {warning}")
        return chosen, False

    def run(self) -> int:
        params = {"seeds": ",".join(str(s) for s in sorted({r.seed for r in self.runs})), "variants": ",".join(dict.fromkeys(r.variant for r in self.runs))}
        if self.adaptive:  # the report's reproduce line: SEEDS=auto
            params["seeds"] = "auto"
        if self.args:  # the report's reproduce line repeats them
            params["overrides"] = " ".join(self.args)
        experiment_id, parent_id = tracking.create_study(self.ablation.name, self.ablation.description, self.profile or "", params)
        try:
            return self._run(experiment_id, parent_id)
        except TuningFailed as err:
            tracking.finish(parent_id, "FAILED")
            say(f"study '{self.ablation.name}' failed: {err}")
            return EXIT_FAILED
        except KeyboardInterrupt:
            tracking.finish(parent_id, "KILLED")
            raise
        except Exception:  # a bug or a store that went away: the parent does not stay RUNNING
            tracking.finish(parent_id, "FAILED")
            raise

    def _run(self, experiment_id: str, parent_id: str) -> int:
        tracking.set_tags(parent_id, {tracking.TUNED: str(bool(self.tune)).lower()})
        n, v = len(self.runs), len(self.ablation.variants)
        tuned = f", after {len(self.tuning_runs)} tuning runs" if self.tune and self.tune.search == "grid" else ", after tuning" if self.tune else ""
        rounds = ", adaptive: more seeds in rounds where verdicts are open" if self.adaptive else ""
        say(f"study '{self.ablation.name}': {n} runs ({v} variants x {n // v} seeds{tuned}{rounds}), parent run {parent_id}, store {tracking.tracking_uri()}")
        if self.ablation.design is not None:  # the design, and what it cannot tell apart, before anything runs
            say(f"design: {self.ablation.design.describe()}")
            for line in self.ablation.design.alias_lines():
                say(f"  alias: {line}")
        interrupted = False
        if self.tune:
            self.tuned, interrupted = self._tune(parent_id, experiment_id)
            self.runs = expand(self.ablation, self.profile, self.run_args, self.seeds, self.gpus, self.config_dir, tuned=self.tuned)
        if interrupted:
            outcomes = []
        elif self.adaptive:
            outcomes, interrupted = adaptive.train_rounds(self, parent_id, experiment_id, say)
        else:
            outcomes, interrupted = self.executor.run_all(self.runs, parent_id, experiment_id)
        jobs = [] if interrupted else self.launcher.flush()
        counted = [o.run_id for o in outcomes if o.run_id]
        tracking.set_tags(parent_id, {tracking.CHILD_RUNS: ",".join(counted)})
        tracking.add_to_study(counted, parent_id)
        view_name = f"{self.ablation.name} study {parent_id[:8]}"  # what the UI lists under "Views"
        view = tracking.save_study_view(experiment_id, parent_id, view_name)
        if interrupted:
            tracking.finish(parent_id, "KILLED")
            say(f"study '{self.ablation.name}' interrupted; run the same command again to resume it")
            return EXIT_INTERRUPTED
        if any(o.status == Status.SUBMITTED for o in outcomes):  # no_wait: the cluster trains them; report later
            say(f"study '{self.ablation.name}': {len(jobs)} jobs submitted ({', '.join(jobs)}); watch them with squeue; "
                f"when they are done: make report-{self.ablation.name}")  # fmt: skip
            return 0
        failed = [o for o in outcomes if o.status in (Status.FAILED, Status.KILLED)]
        report_ok = True
        try:
            from ablations.report.write import write_report

            say(f"report: {write_report(self.ablation.name, parent_id=parent_id, config_dir=self.config_dir)}")
        except Exception as err:  # the runs are safe in MLflow; say why the report is missing
            say(f"report failed: {type(err).__name__}: {err}; the runs are in the store: make report-{self.ablation.name} writes it again")
            report_ok = False
        tracking.finish(parent_id, "FINISHED" if report_ok and not failed else "FAILED")
        _say_outcomes(self.ablation.name, outcomes, failed)
        clicks = f'"{tracking.SWITCH}" (top left), {self.ablation.name}, "{tracking.VIEWS}", "{view_name}"'
        say(f"browse it: make ui, then click {clicks}; or open {tracking.study_link(experiment_id, view)}")
        say(f"  (its variants' mean curves over seeds: {tracking.study_link(experiment_id, view, chart=True)})")
        if any(o.refused for o in failed):  # the input must change: the cluster can never run these runs as asked
            return EXIT_USAGE
        return 0 if report_ok and not failed else EXIT_FAILED


def _say_outcomes(name: str, outcomes: list[Outcome], failed: list[Outcome]) -> None:
    count = {s.value: sum(o.status == s for o in outcomes) for s in (Status.FINISHED, Status.SKIPPED, Status.REUSED, Status.BUSY)}
    say(
        f"study '{name}': {count['FINISHED']} trained, {count['SKIPPED']} skipped (finished before), "
        f"{count['REUSED']} reused (same config finished in another study), "
        + (f"{count['BUSY']} trained by another study process, " if count["BUSY"] else "")
        + f"{len(failed)} failed"
    )
    for o in failed:
        say(f"  FAILED {o.spec.name} (run {o.run_id}): {o.reason.splitlines()[-1] if o.reason else ''}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="a file in configs/ablations/ without .yaml")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides for every variant")
    parser.add_argument("--profile", default=None, help="default: the ablation file's `profile`, else demo")
    parser.add_argument("--seeds", default=None, help="how many (3), which (0,1,2), or auto (adaptive, within the file's seeds: {min, max}, else 3 to 10)")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per run (DDP when > 1)")
    parser.add_argument("--parallel", type=int, default=1, help="runs at the same time")
    parser.add_argument("--force", action="store_true", help="train every run again, even finished ones")
    parser.add_argument("--tune", action="store_true", help="tune first, as the file's tune: block says, then train each variant at its best value")
    parser.add_argument("--launcher", choices=["local", "slurm"], default="local", help="where runs train: this machine, or a SLURM cluster")
    parser.add_argument("--slurm", default="", help='with --launcher slurm: "key=value ..." over configs/launchers/slurm.yaml')
    parser.add_argument("--no-wait", action="store_true", help="with --launcher slurm: submit and return; make report-NAME once the jobs are done")
    parser.add_argument("--config-dir", type=Path, default=None, help="default: configs/ ($ABLATION_CONFIGS)")
    parser.add_argument("--variants", default=None, help="only these variants, comma-separated (the baseline and each one's reference come too)")
    args = parser.parse_intermixed_args(argv)
    auto = (args.seeds or "").strip().lower() == "auto"
    seeds = parse_seeds(args.seeds, "SEEDS") if args.seeds and not auto else None
    launcher = None
    if args.launcher == "slurm":
        if args.no_wait and args.tune:
            raise ConfigError("NO_WAIT cannot tune: tuning needs the tuning runs' results before the study's runs; tune without NO_WAIT")
        options = slurm.load_slurm_config(args.slurm.split(), args.config_dir)
        launcher = slurm.SlurmLauncher(options, args.gpus, args.config_dir, say, no_wait=args.no_wait)
        if options.cluster == "slurm" and tracking.tracking_uri().startswith("sqlite"):
            say(f"note: the jobs write to the SQLite store {tracking.tracking_uri()}: fine on one machine; across nodes serve it (make server) "
                "and set MLFLOW_TRACKING_URI (README: Running on a SLURM cluster)")  # fmt: skip
    elif args.no_wait or args.slurm:
        raise ConfigError("NO_WAIT and SLURM=... go with LAUNCHER=slurm")
    study = Study(args.name, args.profile, args.overrides, seeds, args.gpus, args.parallel, args.force, args.config_dir, launcher, tune=args.tune, auto=auto,
                  variants=[v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None)  # fmt: skip
    study.preflight()
    return study.run()


if __name__ == "__main__":
    sys.exit(run_command(main))
