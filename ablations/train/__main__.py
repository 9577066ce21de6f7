"""python -m ablations.train: train one run (ablations.train.run)."""

import sys

from ablations.train.run import main
from core.errors import run_command

sys.exit(run_command(main))
