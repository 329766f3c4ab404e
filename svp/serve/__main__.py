"""``python -m svp.serve``: see :mod:`svp.serve.swift_server`."""

import sys

from svp.serve.swift_server import main

sys.exit(main())
