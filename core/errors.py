"""Errors a user can fix, and the one place that turns them into exit code 2.

Each kind has its own class; none inherits from another. Commands wrap their work
in `usage_errors()`, which prints `error: <message>` and gives exit code 2, before
anything has been trained or written to the tracking store.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class ConfigError(ValueError):
    """A configuration key, value or file is wrong; the message names it and the fix."""


class DataError(Exception):
    """A dataset is missing or broken; the message says how to get or repair it."""


class TrackingError(Exception):
    """The MLflow tracking store cannot be reached."""


class DeviceError(Exception):
    """The accelerators asked for do not exist on this machine."""


USAGE_ERRORS = (ConfigError, DataError, TrackingError, DeviceError)


def run_command(work: Callable[[], int]) -> int:
    """Runs a command's work; an error the user can fix becomes `error: ...` and exit 2."""
    try:
        return work()
    except USAGE_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
