"""The table, the goals it checks, and whether the loader keeps up."""

from __future__ import annotations

from tools.bench.common import GOAL_CHANNELS_LAST, GOAL_INLINE_LOADER, GOAL_LOGGING, GOAL_RATIO, GOAL_RATIO_AUGMENTED, GOAL_WORKER_HEADROOM, fmt_rate
from tools.bench.toggles import TOGGLES


def render(r: dict) -> str:
    m = r["machine"]
    lines: list[str] = []
    add = lines.append

    def row(label: str, value: str, note: str = "") -> None:
        add(f"  {label:<44} {value:>14}  {note}".rstrip())

    add(f"AlexNet ablation suite: performance{' (--quick: tiny sizes, figures not meaningful)' if r['quick'] else ''}")
    add("")
    add("machine")
    row("cpu", "", f"{m['cpu']}, {m['cpu_cores']} usable cores")
    row("torch threads", str(m["threads"]))
    row("versions", "", f"torch {m['torch']}, lightning {m['lightning']}, mlflow {m['mlflow']}, python {m['python']}")
    row("gpu", "", m["gpu"] or "none (CUDA not available)")
    busy = max(r["load"]) > m["cpu_cores"]
    row("load average (1 min), start / end", " / ".join(f"{x:.1f}" for x in r["load"]), "other processes share the cores: figures are noisy" if busy else "")

    c = r["cifar"]
    add("")
    add(f"training throughput, images/s: the small CIFAR-10 network, ReLU, no normalisation or dropout, 32 px, batch {c['batch']}, 32-true, CPU, "
        f"{m['threads']} threads")  # fmt: skip
    add(f"(median of {c['repeats']} repeats, each a suite run whose {c['steps']} timed steps, after {c['warmup']} warm-up,")
    add("alternate one by one with the other loop's)")
    runs = lambda xs, fmt=fmt_rate: "repeats " + ", ".join(fmt(x) for x in xs)  # noqa: E731
    for key, what in (("cifar", "no augmentation"), ("cifar_paper", "paper's augmentation")):
        x = r[key]
        row(f"suite, {what}", fmt_rate(x["suite_img_per_s"]), f"{x['suite_step_s'] * 1000:.0f} ms/step; {runs(x['suite_runs'])}")
        row(f"independent reference, {what}", fmt_rate(x["bare_img_per_s"]), f"{x['bare_step_s'] * 1000:.0f} ms/step; {runs(x['bare_runs'])}")
        row(f"suite / reference, {what}", f"{x['ratio']:.3f}", f"median over step pairs; {runs(x['ratios'], lambda v: f'{v:.3f}')}")
    add("each toggle's path: the network above with one layer choice changed, no augmentation, against the reference")
    add("with the same change (its own layers: tools/reference.py), interleaved as above")
    for name, x in r["toggles"].items():
        goal = name in TOGGLES
        row(
            f"{name}: suite / reference",
            f"{x['ratio']:.3f}",
            f"suite {fmt_rate(x['suite_img_per_s'])}, reference {fmt_rate(x['bare_img_per_s'])} img/s; "
            + (runs(x["ratios"], lambda v: f"{v:.3f}") if goal else f"batch {x['batch']}, {x['steps']} step pairs, no goal"),
        )
    x = r["cifar_component"]
    row("component loop (suite's network, pipeline)", fmt_rate(x["bare_img_per_s"]), "what Lightning, MLflow and the loader add:")
    row("suite / component loop, no augmentation", f"{x['ratio']:.3f}", f"median over step pairs; {runs(x['ratios'], lambda v: f'{v:.3f}')}")
    f = r["flops"]
    row("achieved, suite / reference", f"{f['suite']:.1f} / {f['reference']:.1f}", "GFLOP/s (forward MACs x 2 x 3 per image)")
    row("measured peak (float32 2048^3 matmul)", f"{f['peak']:.1f}", f"GFLOP/s; the suite reaches {f['suite'] / f['peak']:.0%} of it")
    cl = r["channels_last"]
    row("cifar profile network, channels_last auto", fmt_rate(cl["auto_img_per_s"]), "LRN, dropout, paper's augmentation, two groups")
    row("the same, channels_last=false", fmt_rate(cl["false_img_per_s"]))
    row("speed-up of the default", f"{cl['ratio']:.2f}x", f"median of the back-to-back pairs; {runs(cl['ratios'], lambda v: f'{v:.2f}')}")
    g = r.get("alexnet")
    if g is None:
        row("alexnet 227 px bf16-mixed channels_last", "skipped", "no CUDA GPU here; run make bench on a GPU machine")
    else:
        add(f"training throughput, images/s: alexnet, 227 px, batch {g['batch']}, bf16-mixed, channels_last, GPU ({m['gpu']})")
        add(f"(median of {g['repeats']} interleaved repeats, suite run then reference run, {g['steps']} steps timed after {g['warmup']} warm-up)")
        row("alexnet suite", fmt_rate(g["suite_img_per_s"]), f"{g['suite_step_s'] * 1000:.1f} ms/step; {runs(g['suite_runs'])}")
        row("alexnet independent reference", fmt_rate(g["bare_img_per_s"]), f"{g['bare_step_s'] * 1000:.1f} ms/step; {runs(g['bare_runs'])}")
        row("alexnet suite / reference", f"{g['ratio']:.3f}", f"median over repeat pairs; {runs(g['ratios'], lambda x: f'{x:.3f}')}")

    lg = r["logging"]
    add("")
    add(f"MLflow logging (RunLogger on SQLite, synchronous), cifar step {c['suite_step_s'] * 1000:.0f} ms")
    row("log_metrics per call", f"{lg['call_ms']:.1f} ms", f"median of {lg['calls']} direct calls")
    if lg["run_calls"]:
        row("log_metrics per call in the suite runs", f"{lg['run_call_ms']:.1f} ms", f"median of {lg['run_calls']} calls (epoch-end metrics)")
    row("share of a logged step", f"{lg['logged_step_share'] * 100:.2f} %", "one call / one step")
    row(
        f"share of training time (every {c['log_every_n_steps']} steps)",
        f"{lg['amortised_share'] * 100:.3f} %",
        f"{lg['calls_per_epoch']} calls per {c['steps_per_epoch']}-step epoch (step metrics + 2 at epoch end)",
    )

    add("")
    add("data pipeline, images/s: loader = SplitDataset + DataLoader as the datamodule builds it, one process, 1 thread")
    add(f"(what one loader worker does); BatchPipeline.train_batch on the CPU, {m['threads']} threads")
    for size, table in r["data"].items():
        for aug, d in table.items():
            row(
                f"{aug} {size} px (stored {d['stored']}): loader / worker",
                fmt_rate(d["loader_img_per_s"]),
                f"BatchPipeline {fmt_rate(d['pipeline_img_per_s'])}",
            )
        files = table["paper"].get("from_files_img_per_s")
        if files:
            ratio = table["paper"]["loader_img_per_s"] / files
            row(f"before: paper {size} px decoding JPEG files", fmt_rate(files), f"in memory is {ratio:,.0f}x faster")
    k = r["keep_up"]
    for line in k["lines"]:
        row(line[0], line[1], line[2])

    s = r["startup"]
    add("")
    add("start-up: python -m ablations.train --profile smoke, in a new process")
    row(
        "command -> first training step, new store",
        "not run (--quick)" if s["new_store_s"] is None else f"{s['new_store_s']:.1f} s",
        "a new SQLite store: MLflow creates its tables first",
    )
    row("command -> first training step, existing store", "not run (--quick)" if s["existing_store_s"] is None else f"{s['existing_store_s']:.1f} s")
    row("make demo wall time", "see note" if r["demo"] else "not measured", r["demo"] or "reports/demo_time.txt is written by make demo")

    add("")
    add("goals")
    for ok, text in r["goals"]:
        add(f"  {'PASS' if ok else 'FAIL'}  {text}")
    return "\n".join(lines)


def goals(r: dict) -> list[tuple[bool, str]]:
    c, lg, k = r["cifar"], r["logging"], r["keep_up"]
    p, cl = r["cifar_paper"], r["channels_last"]
    return [
        (c["ratio"] >= GOAL_RATIO, f"suite / independent reference >= {GOAL_RATIO}, no augmentation, CPU: {c['ratio']:.3f}"),
        (p["ratio"] >= GOAL_RATIO_AUGMENTED, f"suite / independent reference >= {GOAL_RATIO_AUGMENTED}, paper's augmentation, CPU: {p['ratio']:.3f}"),
        *[
            (x["ratio"] >= GOAL_RATIO, f"suite / independent reference >= {GOAL_RATIO}, {name}, CPU: {x['ratio']:.3f}")
            for name, x in r["toggles"].items()
            if name in TOGGLES
        ],
        (cl["ratio"] >= GOAL_CHANNELS_LAST, f"default memory format >= {GOAL_CHANNELS_LAST}x channels_last=false, cifar profile network: {cl['ratio']:.2f}x"),
        (
            lg["amortised_share"] < GOAL_LOGGING,
            f"MLflow logging < {GOAL_LOGGING:.0%} of step time at log_every_n_steps={c['log_every_n_steps']}: "
            f"{lg['amortised_share'] * 100:.3f} % (a logged step alone: {lg['logged_step_share'] * 100:.2f} %)",
        ),
        (k["ok"], f"loader not the bottleneck at defaults: {k['summary']}"),
    ]


def keep_up(r: dict, workers: int) -> dict:
    """Does the loader keep up with training at the default worker count? With no
    workers it runs inline, so its share of the step is what it costs; with
    workers, they together must supply more than training consumes."""
    lines, verdicts = [], []
    trains = {"32": r["cifar"]["suite_img_per_s"]}
    if r.get("alexnet"):
        trains["227"] = r["alexnet"]["suite_img_per_s"]
    for size, rate in trains.items():
        for aug, d in r["data"][size].items():
            per_worker = d["loader_img_per_s"]
            if workers == 0:
                share = rate / per_worker
                ok = share < GOAL_INLINE_LOADER
                lines.append(
                    (f"keeps up? {aug} {size} px, num_workers=0", f"{share * 100:.1f} %", f"of the step spent loading, inline ({'yes' if ok else 'NO'})")
                )
            else:
                headroom = workers * per_worker / rate
                ok = headroom >= GOAL_WORKER_HEADROOM
                lines.append((f"keeps up? {aug} {size} px, num_workers={workers}", f"{headroom:.1f} x", f"training's rate ({'yes' if ok else 'NO'})"))
            verdicts.append((size, aug, ok, lines[-1][1]))
    if "227" not in trains:
        lines.append(("keeps up? 227 px", "not measured", "no GPU training rate to compare with"))
    default = [v for v in verdicts if v[1] == "paper"]  # data.augment's default
    ok = all(v[2] for v in default)
    how = f"num_workers={workers}, augment=paper: " + ", ".join(f"{v[0]} px {v[3]}" for v in default)
    how += " of the step" if workers == 0 else " the training rate"
    return {"lines": lines, "ok": ok, "summary": how}
