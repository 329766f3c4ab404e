"""A clone is self-contained: nothing in the project names a path beside the checkout, and
the runtime guard (tests/read_guard.py, installed by tests/conftest.py) catches a read there.

The static half reads every text file of the project (Python through ``ast``, so a path built
from constants is seen as the string it is; the rest line by line). The runtime half starts a
watched Python process, as the tests start ``swift`` and the data tools, inside a fake clone
with the workplace folder (``WORKPLACE``) beside it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import read_guard
from tests.helpers import REPO, offline_env

TEXT_SUFFIXES = {".py", ".sh", ".md", ".cfg", ".toml", ".txt", ".yaml", ".yml", ".json",
                 ".jsonl", ".ini", ""}
WORKPLACE = "shared"  # the workplace folder beside the clone that a user's clone lacks
# written in pieces so that this file does not match itself
FORBIDDEN_TEXT = [
    re.compile(r"SVP_" + "SHARED_DIR"),
    re.compile(r"\.\.[/\\]" + WORKPLACE + r"\b"),
    re.compile(r"\b" + WORKPLACE + r"/(fixtures|seeds|notes|hooks|DESIGN\.md)\b"),
    re.compile(r"/work/"),  # this workplace's absolute folders
]


def project_files() -> list[Path]:
    """The project's text files: what git tracks plus what it would add (not ignored), so
    build outputs, the venv and tool caches are left out exactly as a commit leaves them."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                             "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    files = [REPO / f for f in listed.stdout.split("\0") if f]
    return sorted(f for f in files if f.is_file() and f.suffix in TEXT_SUFFIXES)


def string_constants(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def names_a_neighbour(value: str) -> bool:
    """A Python string that, used as a path part, reaches the workplace folder beside the
    clone: the bare folder name (joined to the clone's parent) or a path through it."""
    parts = re.split(r"[/\\]", value.strip())
    return parts[0] == WORKPLACE or (len(parts) > 1 and ".." in parts and WORKPLACE in parts)


def test_no_project_file_names_a_path_beside_the_clone():
    offenders = []
    for path in project_files():
        if path == Path(__file__):
            continue
        rel = path.relative_to(REPO)
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            if any(p.search(line) for p in FORBIDDEN_TEXT):
                offenders.append(f"{rel}:{lineno}: {line.strip()[:100]}")
        if path.suffix == ".py":
            offenders += [f"{rel}:{lineno}: string {value!r}"
                          for lineno, value in string_constants(path) if names_a_neighbour(value)]
    assert not offenders, ("the project names a path outside the repository (a user's clone "
                           "has nothing beside it; carry the file under tests/fixtures):\n"
                           + "\n".join(offenders))


def test_every_fixture_folder_says_where_its_files_come_from():
    folders = sorted({p.parent for p in (REPO / "tests" / "fixtures").rglob("*")
                      if p.is_file() and p.name != "README.md"})
    assert folders, "tests/fixtures holds no files"
    missing = [str(f.relative_to(REPO)) for f in folders if not (f / "README.md").is_file()]
    assert not missing, f"fixture folders without a README (provenance, licence): {missing}"


@pytest.mark.parametrize(("path", "outside"), [
    (f"/w/{WORKPLACE}/fixtures/a.json", True),  # the workplace folder beside the clone
    ("/w/data", True),                      # any visible neighbour
    ("/w/main-old/tests/x.py", True),       # a sibling whose name starts like the clone's
    ("/w/main/tests/fixtures/a.json", False),
    ("/w/main", False),
    ("/w/.cache/huggingface/x", False),     # hidden: a tool's cache or config
    ("/w/venv/lib/python3.11/os.py", False),  # an allowed root (a venv beside the clone)
    ("/usr/lib/python3.11/os.py", False),   # the system's, not a neighbour's
    ("/w", False),                          # the parent folder itself (found by walking up)
])
def test_what_counts_as_beside_the_clone(path, outside):
    assert read_guard.outside_repository(path, "/w/main", ["/w/venv"]) is outside


def test_allowed_roots_never_cover_the_neighbours(tmp_path):
    """A clone in a temporary folder (as CI or a user may make one) keeps its neighbours
    judged even though the temporary folder is an allowed root."""
    clone = tmp_path / "clone"
    roots = read_guard.allowed_roots(str(clone))
    assert not any(read_guard._under(str(tmp_path.resolve()), r) for r in roots), roots


def test_a_watched_process_reporting_reads_beside_the_clone(tmp_path):
    """A Python process started with the tests' environment (``offline_env``: the guard's
    sitecustomize first on PYTHONPATH) logs what it read beside a fake clone: by open, by
    listing, by glob, through a symlink inside the clone and by ``..``; nothing for reads inside the
    clone or in a hidden neighbour."""
    clone, hidden = tmp_path / "clone", tmp_path / ".cache"
    shared = tmp_path / WORKPLACE / "fixtures"
    for d in (clone, shared, hidden):
        d.mkdir(parents=True)
    (shared / "a.json").write_text("{}")
    (hidden / "b.txt").write_text("b")
    (clone / "c.txt").write_text("c")
    (clone / "link.json").symlink_to(shared / "a.json")
    code = "\n".join([
        "import glob, json, os, pathlib",
        f"json.loads(pathlib.Path({str(shared / 'a.json')!r}).read_text())",
        f"os.listdir({str(shared)!r})",
        f"glob.glob({str(shared / '*.json')!r})",
        f"open({str(clone / 'link.json')!r}).read()",
        f"open({str(clone / '..' / WORKPLACE / 'fixtures' / 'a.json')!r}).read()",
        f"open({str(hidden / 'b.txt')!r}).read()",
        f"open({str(clone / 'c.txt')!r}).read()",
    ])
    log = tmp_path / "reads.log"
    env = offline_env(**read_guard.subprocess_env(str(log), str(clone)))
    proc = subprocess.run([sys.executable, "-c", code], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = [line.split(" ", 2)[1:] for line in log.read_text().splitlines()]
    target = str((shared / "a.json").resolve())
    assert ["open", target] in seen and ["os.listdir", str(shared.resolve())] in seen
    assert ["glob.glob", str(shared.resolve())] in seen
    assert seen.count(["open", target]) == 3, seen  # directly, by a link, through ".."
    assert not [s for s in seen if ".cache" in s[1] or s[1].startswith(str(clone.resolve()))]
    # and the guard is quiet where nobody asked for it
    quiet = {k: v for k, v in env.items() if k != read_guard.ENV_LOG}
    log.unlink()
    subprocess.run([sys.executable, "-c", code], cwd=clone, env=quiet, check=True, timeout=120)
    assert not log.exists()
