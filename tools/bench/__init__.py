"""Performance, measured side by side with bare PyTorch.

    python -m tools.bench            # the full table (make bench; 3 to 4 min on 2 CPU cores)
    python -m tools.bench --quick    # a tiny run that only checks that the bench works

What it measures, and how:

* Training throughput (images/s) of the suite's real training path,
  `ablations.train.run` (the datamodule and its loader, AlexNetModule with its
  BatchPipeline, the RunLogger MLflow logger on a temporary SQLite store,
  ModelCheckpoint, `L.Trainer.fit`), against a bare PyTorch loop with the same
  network, data, batch, SGD settings, batch augmentation and thread count.
  Steady state: W warm-up steps, then N timed steps; a suite step runs from the
  start of one training step to the start of the next (one batch fetch, one
  BatchPipeline call, one optimiser step, Lightning's and MLflow's per-step
  work). On the CPU each repeat is one suite run whose steps alternate one by
  one with bare steps (suite, bare, suite, bare, ...; a callback runs the bare
  step after each suite step and times it apart), so both see the same machine
  while other processes come and go; figures are median steps, the ratio the
  median of the step pairs' ratios over all repeats. On a GPU whole runs alternate, timed between
  synchronisations. Medians over >= 3 repeats. Per-epoch work (validation, the
  checkpoint, epoch metrics) falls outside the timed steps; logging is measured
  on its own. `cifar` at 32 px on the CPU;
  `alexnet` at 227 px in bf16-mixed with channels_last only on a CUDA GPU.
* Every toggle's path (tools/bench/toggles.py): the same network with one layer choice
  changed (tanh, LRN, BatchNorm, non-overlapping pooling, dropout, two groups), against
  the reference with the same change, interleaved as above; and the tutorial's network
  at 224 px for a few steps, without a goal.
* MLflow logging: RunLogger.log_metrics timed per call (directly, and every
  call made in the suite runs), as a share of the suite's step time.
* Data pipeline: images/s of the training loader alone, built as the datamodule
  builds it, in one process with one thread (what one loader worker does), and
  of BatchPipeline.train_batch on the CPU, per augmentation setting, at 32 px and
  227 px (stored at 256 px); and whether the loader keeps up with training at
  the default worker count.
* Start-up: `python -m ablations.train --profile smoke` in a new process, from
  the command to the first training step (train prints a timestamp there when
  ABLATION_FIRST_STEP_STAMP=1), with a new SQLite store and with an existing one.
* `make demo`'s wall time, from reports/demo_time.txt when `make demo` wrote it.

The table goes to stdout, progress to stderr; `--json PATH` also writes the figures.
"""
