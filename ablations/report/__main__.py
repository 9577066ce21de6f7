"""python -m ablations.report NAME: (re)write a study's report (ablations.report.write)."""

import sys

from ablations.report.write import main
from core.errors import run_command

sys.exit(run_command(main))
