"""Started by every Python process the tests launch (this folder is first on the PYTHONPATH
that ``tests.helpers.offline_env`` gives them): installs ``tests/read_guard.py``'s audit hook
when the suite asked for it (``SVP_TEST_READ_LOG``), and nothing otherwise. Loaded by file
path, so no package named ``tests`` is imported into the watched process."""

import importlib.util
import os

_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "read_guard.py")
_spec = importlib.util.spec_from_file_location("_svp_read_guard", _path)
_guard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_guard)
_guard.install_from_environment()
