"""The suite reads nothing from beside the clone: a runtime guard on file reads.

A clone is all a user has. A test that reads a folder next to the checkout (a workplace's
folder of fixtures, once) passes on the machine that has that folder and is red everywhere else, so
the suite watches its own reads: a CPython audit hook (``sys.addaudithook``) sees every
``open``, ``os.listdir``, ``os.scandir`` and ``glob.glob`` in the pytest process, and, through
``tests/read_guard_site/sitecustomize.py`` on the ``PYTHONPATH`` the tests give their
subprocesses (``swift sft``, the data tools, torchrun's workers), in every Python process a
test starts. A read outside the repository is appended to a log; ``tests/conftest.py`` fails
the test during which it happened, naming the path.

"Outside" is a visible entry of the clone's parent folder other than the clone itself (after
symlinks are resolved): a fixtures folder, ``../data``, a sibling checkout. Hidden entries there
(``~/.cache``, ``~/.config`` when the clone sits in a home folder), the interpreter's own
prefixes and the temporary folder stay allowed: tools keep their caches there, and tests
write their scratch files under ``tmp_path``. Paths elsewhere on the machine (``/usr``,
``/proc``) are the system's, not a neighbour's, and are not judged here; the static scan in
``tests/test_self_contained.py`` covers path names written into the sources.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ENV_LOG = "SVP_TEST_READ_LOG"    # where violations are appended (one line each)
ENV_ROOT = "SVP_TEST_READ_ROOT"  # the repository the reads are judged against
SITE_DIR = Path(__file__).resolve().parent / "read_guard_site"
EVENTS = {"open", "os.listdir", "os.scandir", "glob.glob"}


def allowed_roots(repo: str) -> list[str]:
    """Folders that may sit beside a clone and be read: this interpreter's prefixes (a venv
    made outside the clone) and the temporary folder (the tests' scratch space). A root that
    holds the clone's parent folder is left out (a clone in /tmp/x/ would otherwise have its
    neighbours allowed); only when the parent *is* the temporary folder do they stay allowed,
    the scratch space being those neighbours."""
    parent = os.path.dirname(os.path.realpath(repo))
    roots = {os.path.realpath(r) for r in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                           tempfile.gettempdir()) if r}
    return sorted(r for r in roots if not (parent != r and _under(parent, r)))


def outside_repository(path: str, repo: str, allowed: list[str]) -> bool:
    """Whether reading ``path`` (absolute, symlinks resolved) reads beside the clone ``repo``:
    under its parent folder, not under ``repo``, not under an allowed root, and not in a
    hidden entry of the parent. A clone at the filesystem's root has no neighbours."""
    parent = os.path.dirname(repo)
    if parent == repo or parent == os.path.dirname(parent):  # repo at / or directly under it
        return False
    if path == parent or not _under(path, parent) or _under(path, repo):
        return False
    if any(_under(path, a) for a in allowed):
        return False
    first = os.path.relpath(path, parent).split(os.sep, 1)[0]
    return not first.startswith(".")


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _event_path(event: str, args: tuple) -> str | None:
    if not args:
        return None
    target = args[0]
    if event == "glob.glob" and isinstance(target, str | bytes):
        target = os.fsdecode(target)
        cut = min((i for i, c in enumerate(target) if c in "*?["), default=len(target))
        target = os.path.dirname(target[:cut]) or "."
    if isinstance(target, bytes):
        target = os.fsdecode(target)
    if isinstance(target, os.PathLike):
        target = os.fspath(target)
    if not isinstance(target, str) or not target:
        return None  # a file descriptor, or the current folder by default
    return target


def install(log: str, repo: str) -> None:
    """Watch this process's reads; append ``<pid> <event> <path>`` to ``log`` for each read
    beside ``repo``. Audit hooks cannot be removed: install once per process.

    The hook sees every import too, so it is kept cheap: a path whose plain absolute form is
    inside the interpreter's prefixes (the venv, the standard library) is taken as it is, and
    a folder's resolved form is computed once (the file itself is resolved only when it is a
    link). Watched imports cost about 10 % more without this."""
    repo = os.path.realpath(repo)
    allowed = allowed_roots(repo)
    fast = tuple(r.rstrip(os.sep) + os.sep for r in {sys.prefix, sys.base_prefix} if r)
    folders: dict[str, str] = {}
    busy = False

    def resolve(path: str) -> str:
        folder, name = os.path.split(path)
        real = folders.get(folder)
        if real is None:
            real = folders[folder] = os.path.realpath(folder)
        path = os.path.join(real, name)
        return os.path.realpath(path) if os.path.islink(path) else path

    def hook(event: str, args: tuple) -> None:
        nonlocal busy
        if event not in EVENTS or busy:
            return
        busy = True  # the log write below is an open() too
        try:
            target = _event_path(event, args)
            plain = os.path.abspath(target) if target is not None else None
            if plain is not None and not plain.startswith(fast):
                path = resolve(plain)
                if outside_repository(path, repo, allowed):
                    with open(log, "a") as f:
                        f.write(f"{os.getpid()} {event} {path}\n")
        except Exception:  # noqa: BLE001 - a guard must never break the code it watches
            pass
        finally:
            busy = False

    sys.addaudithook(hook)


def install_from_environment() -> None:
    """Used by the subprocesses' ``sitecustomize``: install when the tests asked for it."""
    log, repo = os.environ.get(ENV_LOG), os.environ.get(ENV_ROOT)
    if log and repo:
        install(log, repo)


def subprocess_env(log: str, repo: str) -> dict[str, str]:
    """What a test's subprocess needs in its environment to be watched the same way."""
    return {ENV_LOG: log, ENV_ROOT: repo}
