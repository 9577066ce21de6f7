"""What became of a planned run in a study: a named status, not a bare string (the str mixin keeps
them equal to MLflow's status names where they are the same)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ablations.study.plan import RunSpec


class Status(str, Enum):
    FINISHED = "FINISHED"  # trained here
    SKIPPED = "SKIPPED"  # finished before, in this study
    REUSED = "REUSED"  # finished in another study: copied
    BUSY = "BUSY"  # trained by another study process at the same time
    SUBMITTED = "SUBMITTED"  # handed to the cluster (NO_WAIT)
    FAILED = "FAILED"
    KILLED = "KILLED"


HAS_RESULT = frozenset({Status.FINISHED, Status.SKIPPED, Status.REUSED, Status.BUSY, Status.FAILED})  # a result (a loss, for FAILED)
FINISHED_LIKE = frozenset({Status.FINISHED, Status.SKIPPED, Status.REUSED, Status.BUSY})  # the run finished, here or elsewhere


@dataclass
class Outcome:
    spec: RunSpec
    run_id: str
    status: Status
    reason: str = ""
    refused: bool = False  # the cluster can never run it as asked
