"""``python -m svp.evaluation``: see :mod:`svp.evaluation.cli`."""

import sys

from svp.evaluation.cli import main

sys.exit(main())
