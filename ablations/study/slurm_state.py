"""What became of a study's SLURM jobs, decided from what every SLURM has.

`squeue` says a job's state while the scheduler remembers it (MinJobAge seconds after it
ended; then the job is gone), `scontrol show job` what a pending job asks for, `sinfo`
what the nodes have, the job's result file (written by submitit) whether it ran to the
end; `sacct` is asked only about a job that has left the queue, and only where
accounting works. Nothing here waits on `sacct`, so clusters without accounting work.
"""

from __future__ import annotations

import math
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GONE = "GONE"  # the scheduler no longer knows the job (it ended MinJobAge ago, or never existed)
ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED", GONE}
# pending reasons that do not clear by themselves: the request exceeds what the partition,
# its nodes or the account allow (an ordinary wait is Priority, Resources, BeginTime, ...)
NEVER = {"PartitionConfig", "ReqNodeNotAvail", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints", "DependencyNeverSatisfied",
         "InvalidAccount", "InvalidQOS", "AssocMaxWallDurationPerJobLimit", "QOSMaxWallDurationPerJobLimit", "QOSMaxCpuPerJobLimit",
         "QOSMaxMemoryPerJob", "QOSMaxGRESPerJob", "QOSMaxNodePerJobLimit"}  # fmt: skip


def _call(args: list[str], timeout: float = 20) -> subprocess.CompletedProcess | None:
    """A SLURM client command; None when it could not run or did not answer in time."""
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


@dataclass
class Seen:
    state: str  # squeue's state (PENDING, RUNNING, CANCELLED, ...), or GONE
    reason: str  # squeue's reason ("Resources", "PartitionConfig", "None")
    at: float  # when squeue said so (time.monotonic)


class Queue:
    """The states of the jobs a study waits on: one `squeue` call for all of them, at most
    every `poll_s` seconds, however many threads ask."""

    def __init__(self, poll_s: float):
        self.poll_s = poll_s
        self._jobs: set[str] = set()
        self._seen: dict[str, Seen] = {}
        self._at, self.error = -math.inf, ""
        self._lock = threading.Lock()

    def watch(self, job: str) -> None:
        with self._lock:
            self._jobs.add(job)
            self._at = -math.inf  # a new job is looked at now

    def forget(self, job: str) -> None:
        with self._lock:
            self._jobs.discard(job)
            self._seen.pop(job, None)

    def look(self, job: str) -> Seen | None:
        """The job's state as of the last squeue call; None while squeue does not answer (`error` says why)."""
        with self._lock:
            if time.monotonic() - self._at >= self.poll_s:
                self._refresh()
            return self._seen.get(job)

    def _refresh(self) -> None:
        self._at = time.monotonic()
        jobs = sorted(self._jobs)
        if not jobs:
            return
        out = _call(["squeue", "-h", "-t", "all", "-j", ",".join(jobs), "-o", "%i|%T|%r"])
        if out is None or (out.returncode != 0 and "Invalid job id" not in out.stderr):
            self.error = out.stderr.strip() if out is not None else "squeue did not answer within 20 s"
            self._seen = {}
            return
        self.error = ""
        seen = {job: Seen(GONE, "", self._at) for job in jobs}  # not listed: the scheduler forgot it
        for line in out.stdout.splitlines() if out.returncode == 0 else []:
            job, state, reason = (line.split("|") + ["", ""])[:3]
            if job.strip() in seen:
                seen[job.strip()] = Seen(state.strip(), reason.strip(), self._at)
        self._seen = seen


@dataclass
class Request:
    """What a job asks of each node."""

    cpus: int
    mem_mb: int
    gpus: int
    nodes: int
    partition: str

    def __str__(self) -> str:
        where = f" on each of {self.nodes} nodes" if self.nodes > 1 else ""
        return f"{self.cpus} CPUs, {self.mem_mb:,} MB of memory and {self.gpus} GPUs{where}"


@dataclass
class Node:
    name: str
    cpus: int
    mem_mb: int
    gpus: int

    def fits(self, r: Request) -> bool:
        return r.cpus <= self.cpus and r.mem_mb <= self.mem_mb and r.gpus <= self.gpus

    def __str__(self) -> str:
        return f"{self.name}: {self.cpus} CPUs, {self.mem_mb:,} MB, {self.gpus} GPUs"


_MB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def _mb(text: str) -> int:
    m = re.fullmatch(r"([\d.]+)([KMGT]?)", text)
    return round(float(m.group(1)) * _MB[m.group(2) or "M"]) if m else 0


def _gpus(gres: str) -> int:
    """GPUs in a GRES/TRES string: "gres:gpu:2", "gres/gpu:a100:2", "gpu:a100:4(S:0-1),nvme:1"."""
    return sum(int(n) for n in re.findall(r"gpu(?::[^:,(=]+)?[:=](\d+)", gres))


def request(job: str) -> Request | None:
    """A pending job's request per node, from `scontrol show job`; None when it cannot say."""
    out = _call(["scontrol", "-o", "show", "job", job])
    if out is None or out.returncode != 0:
        return None
    text = out.stdout

    def field(key: str) -> str:
        m = re.search(rf"(?:^|\s){re.escape(key)}=(\S*)", text)
        return m.group(1) if m else ""

    nodes = int(re.match(r"\d*", field("NumNodes")).group() or 1)
    cpus = max(int(field("MinCPUsNode") or 1), math.ceil(int(field("NumCPUs") or 1) / nodes))
    mem = _mb(field("MinMemoryNode")) or _mb(field("MinMemoryCPU")) * cpus
    return Request(cpus, mem, _gpus(field("TresPerNode")), nodes, field("Partition"))


def nodes(partition: str) -> list[Node]:
    """The nodes of the partition(s) (`sinfo`; "": the default partition); [] when sinfo cannot say."""
    out = _call(["sinfo", "-h", "-N", *(["-p", partition] if partition else []), "-o", "%N|%c|%m|%G|%P"])
    if out is None or out.returncode != 0:
        return []
    found = {}
    for line in out.stdout.splitlines():
        name, cpus, mem, gres, part = (line.split("|") + [""] * 4)[:5]
        if cpus.strip().isdigit() and (partition or part.strip().endswith("*")):
            found[name] = Node(name.strip(), int(cpus), int(mem) if mem.strip().isdigit() else 0, _gpus(gres))
    return list(found.values())


def largest(found: list[Node]) -> Node | None:
    return max(found, key=lambda n: (n.gpus, n.cpus, n.mem_mb)) if found else None


def accounted_state(job: str) -> str | None:
    """The job's final state from accounting, where accounting works (`sacct`); else None."""
    out = _call(["sacct", "-n", "-P", "-X", "-j", job, "-o", "State"])
    if out is None or out.returncode != 0:
        return None
    states = [s.strip() for s in out.stdout.splitlines() if s.strip()]
    return states[-1] if states else None


@dataclass
class Fate:
    """How a job ended: its result file is there (`done`), or the run is KILLED or FAILED, and why."""

    status: str  # done, KILLED, FAILED
    why: str = ""
    refused: bool = False  # SLURM can never run the job as asked: the input must change
    request: Request | None = None
    largest: Node | None = None


class Follower:
    """One job's fate, asked again and again (`check`) while the study waits: None while it is
    queued or running. An end (an ended state, or gone from the queue) and a pending reason
    that does not clear by itself count once squeue still says so `poll_s` later: a requeue
    passes through ended states, and a result file may reach a shared filesystem late."""

    def __init__(self, job: str, result: Path, log: Path, queue: Queue, say: Callable[[str], None], say_pending_s: float):
        self.job, self.result, self.log, self.queue, self.say = job, result, log, queue, say
        self.say_pending_s = say_pending_s
        self._ended_at: float | None = None  # when squeue first said it ended
        self._never_at: float | None = None  # when squeue first said it is pending for good
        self._beyond: tuple[Request, Node] | None = None
        self._sized = False
        self._since = self._said = time.monotonic()
        self._last: Seen | None = None

    def check(self) -> Fate | None:
        seen = self.queue.look(self.job)
        if self.result.exists():
            return Fate("done")
        now = time.monotonic()
        if seen is None:
            if now - self._said >= self.say_pending_s:
                self._said = now
                self.say(f"slurm job {self.job}: squeue does not answer ({self.queue.error}); still waiting")
            return None
        if seen.state in ENDED:
            self._ended_at = seen.at if self._ended_at is None else self._ended_at
            return self._ended(seen) if seen.at - self._ended_at >= self.queue.poll_s else None
        self._ended_at = None
        self._last = seen
        if seen.state != "PENDING":
            self._never_at = None
            return None
        if not self._sized:  # a request larger than every node never starts, whatever SLURM's reason
            self._sized = True
            req = request(self.job)
            fitting = nodes(req.partition) if req else []
            if req and fitting and not any(n.fits(req) for n in fitting):
                self._beyond = (req, largest(fitting))
        if self._beyond or seen.reason.split(",")[0] in NEVER:
            self._never_at = seen.at if self._never_at is None else self._never_at
            if seen.at - self._never_at >= self.queue.poll_s:
                return self._never(seen)
        elif now - self._said >= self.say_pending_s:
            self._said = now
            self.say(f"slurm job {self.job} still pending ({seen.reason}) after {(now - self._since) / 60:.1f} min; the study goes on waiting")
        return None

    def _never(self, seen: Seen) -> Fate:
        req, big = self._beyond or (request(self.job), None)
        big = big or (largest(nodes(req.partition)) if req else None)
        _call(["scancel", self.job])
        asks = f"it asks for {req}" if req else "its request is unknown"
        part = f"partition {req.partition}" if req and req.partition else "the cluster"
        has = f"the largest node of {part} is {big}" if big else f"sinfo could not say what the nodes of {part} have"
        why = (f"slurm job {self.job} can never start: SLURM keeps it pending ({seen.reason}), {asks}, and {has}; "
               "the study cancelled it")  # fmt: skip
        return Fate("FAILED", why, refused=True, request=req, largest=big)

    def _ended(self, seen: Seen) -> Fate:
        state = seen.state
        if state == GONE:
            state = accounted_state(self.job) or GONE
        last = "never seen queued or running"
        if self._last is not None:
            last = f"last seen {self._last.state}" + (f" ({self._last.reason})" if self._last.reason not in ("", "None") else "")
        started = self.log.exists()
        what = "it never started" if not started else "its log says how far it got"
        if state == GONE:
            why = (f"slurm job {self.job} left the queue without a result ({last}; squeue no longer knows it and sacct cannot say): "
                   f"cancelled from outside, a node failure, or its node could not start it; {what}")  # fmt: skip
            return Fate("FAILED", why)
        status = "KILLED" if state.startswith("CANCELLED") else "FAILED"
        return Fate(status, f"slurm job {self.job} ended {state} without a result ({last}); {what}")
