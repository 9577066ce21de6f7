"""Where the suite reads and writes, resolved when asked (never at import time),
so that an environment variable set later (by a test, a study, a cluster job) counts.

| what | default | environment |
|---|---|---|
| configs (base, profiles, ablations) | configs/ | ABLATION_CONFIGS |
| checkpoints, one folder per MLflow run | checkpoints/ | ABLATION_CHECKPOINTS |
| reports | reports/ | ABLATION_REPORTS |
| decoded-image cache | datasets/.cache/ | ABLATION_CACHE |
| cluster job logs | slurm-logs/ | ABLATION_SLURM_LOGS |
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value) if value else default


def config_dir() -> Path:
    return _env_path("ABLATION_CONFIGS", ROOT / "configs")


def checkpoints_dir() -> Path:
    return _env_path("ABLATION_CHECKPOINTS", ROOT / "checkpoints")


def checkpoint(run_id: str) -> Path:
    """The last checkpoint of an MLflow run: where training writes it and resumes from it."""
    return checkpoints_dir() / run_id / "last.ckpt"


def reports_dir() -> Path:
    return _env_path("ABLATION_REPORTS", ROOT / "reports")


def cache_dir() -> Path:
    """Decoded image folders are cached here, not beside the images, which may be read-only."""
    return _env_path("ABLATION_CACHE", ROOT / "datasets" / ".cache")
