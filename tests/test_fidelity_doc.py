"""docs/fidelity.md names a test for each row: every named test exists (a renamed or deleted
test would leave a row that pins nothing)."""

from __future__ import annotations

import re

from tests.helpers import REPO


def test_every_test_the_fidelity_table_names_exists():
    text = (REPO / "docs" / "fidelity.md").read_text()
    named, last, folder = [], None, REPO / "tests"
    # `tests/x/test_a.py::test_b`; `test_a.py::test_b` (in the folder named last); `::test_c`
    # (in the file named last)
    for path, name in re.findall(r"`((?:tests/)?[\w/]*test_\w+\.py)?::(test_\w+)", text):
        if path.startswith("tests/"):
            last = REPO / path
            folder = last.parent
        elif path:
            last = folder / path
        named.append((last, name))
    assert len(named) > 40
    missing = [f"{file.relative_to(REPO)}::{name}" for file, name in named
               if not file.is_file()
               or not re.search(rf"^def {name}\(", file.read_text(), re.M)]
    assert not missing, missing
