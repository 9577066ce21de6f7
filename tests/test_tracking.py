"""A run reused from another study, in a real SQLite MLflow store: the copy keeps the
times of the run that trained it (the UI's Duration is that run's training time), says
where it comes from in its description, and while it is being copied it counts as
claimed, not as a stale run of a dead process."""

from __future__ import annotations

import time

from ablations import tracking
from ablations.study import launch
from tests.helpers import client


def _trained_run(store: str) -> str:
    """A FINISHED run that trained for 95.3 s, a week ago, with a metric history and a dataset input."""
    c = client(store)
    exp = tracking.experiment_id("relu_only")
    start = int(time.time() * 1000) - 7 * 86_400_000
    run_id = tracking.create_run(exp, "relu-seed0", {tracking.VARIANT: "relu"}, start_time=start)
    for step, value in enumerate((0.9, 0.7)):
        c.log_metric(run_id, "val_err1", value, timestamp=start + 1000 * step, step=step)
    tracking.log_dataset(run_id, "shapes-train", "abc123", "synthetic", {"images": 64}, "training")
    tracking.finish(run_id, end_time=start + 95_300)
    return run_id


def test_a_reused_run_keeps_its_sources_times_and_says_where_it_comes_from(store):
    source_id = _trained_run(store)
    source = tracking.get_run(source_id)
    exp = tracking.experiment_id("activation")
    copy_id = tracking.copy_run(source_id, exp, "relu-seed0", {tracking.NOTE: "variant relu of the activation ablation, seed 0"})
    copy = tracking.get_run(copy_id)
    assert copy.info.status == "FINISHED" and copy.info.experiment_id == exp
    assert (copy.info.start_time, copy.info.end_time) == (source.info.start_time, source.info.end_time)
    assert copy.info.end_time - copy.info.start_time == 95_300
    assert copy.data.tags[tracking.REUSED_FROM] == source_id
    note = copy.data.tags[tracking.NOTE]
    origin = f"reused from relu-seed0 (run {source_id[:8]}…, experiment relu_only; identical config, not retrained)"
    assert note == f"{origin}: variant relu of the activation ablation, seed 0"
    assert [m.value for m in client(store).get_metric_history(copy_id, "val_err1")] == [0.9, 0.7]
    assert [(d.dataset.name, d.dataset.digest) for d in copy.inputs.dataset_inputs] == [("shapes-train", "abc123")]
    assert abs(int(copy.data.tags[tracking.COPIED_AT]) - time.time()) < 120


def test_a_copy_in_progress_is_a_claim_though_its_start_time_is_old(store):
    """Another study process that finds the copy RUNNING waits for it (busy) instead of
    marking it stale: a copy counts from when it was copied, not from its source's start."""
    source = tracking.get_run(_trained_run(store))
    exp = tracking.experiment_id("activation")
    copying = tracking.create_run(exp, "relu-seed0", {tracking.COPIED_AT: str(int(time.time()))}, start_time=source.info.start_time)
    assert launch.alive(tracking.get_run(copying))
    left = tracking.create_run(exp, "relu-seed1", {tracking.COPIED_AT: str(int(time.time()) - launch.CLAIM_TTL_S - 5)}, start_time=source.info.start_time)
    assert not launch.alive(tracking.get_run(left))  # a copy abandoned longer than a claim lasts
