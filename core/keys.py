"""Configuration keys that do not change what a run computes, for the code that compares
runs (config hashes, the report's list of what a variant changes). No framework."""

from __future__ import annotations

# Where and how fast a run goes (data.root: where a named dataset is kept; an image
# folder's root is the dataset itself, which ablations.train.config.Config.hash counts).
EXECUTION_KEYS = frozenset(
    {
        "trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.threads", "trainer.log_every_n_steps",
        "trainer.channels_last", "trainer.system_metrics_s", "data.num_workers", "data.root", "data.download",
    }
)  # fmt: skip


def is_choice(key: str) -> bool:
    """Whether a logged param is a choice that changes what is trained, not where or how
    fast (EXECUTION_KEYS), the seed, or a fact the run resolved (resolved.*, steps_per_epoch)."""
    return key not in EXECUTION_KEYS and key not in ("seed", "steps_per_epoch") and not key.startswith("resolved.")
