"""python -m ablations.study NAME: run an ablation study (ablations.study.runner)."""

import sys

from ablations.study.runner import main
from core.errors import run_command

sys.exit(run_command(main))
