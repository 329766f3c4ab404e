"""README.md as written: every fenced shell block runs, in README order, in a folder laid out
like a fresh clone, through real bash.

The heavy commands are replaced by stand-ins (``tests/readme/shim.py``) that check every local
path a step reads was written by an earlier step or fetched by one, and create what the real
command writes where it writes it. Recipes run their own ``DRY_RUN=1``; ``python -m svp...``
and the cheap tools run for real. Afterwards every ``swift`` command (typed in the README or
printed by a recipe) is parsed by ms-swift 4.6's own argument parser and every
``data_tools`` command by the tool's own argparse, so a flag that does not exist fails.
A YAML fence whose first line is ``# NAME`` is saved as NAME (the registry example).
"""

from __future__ import annotations

import argparse
import json
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, offline_env

DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
SHELL_FENCE = re.compile(r"^```(bash|sh|shell|console)\s*$")
CLONE_PARTS = ("recipes", "plugins", "data_tools", "svp", "requirements", "setup.cfg",
               "Makefile", "pyproject.toml")
SHIMS = ("swift", "python", "python3", "python3.11", "pip", "make", "bash", "modelscope",
         "huggingface-cli", "hf", "wget", "unzip")


def fences(path: Path) -> list[tuple[str, int, str, str]]:
    """(section title, first line number, language, text) of every fenced block."""
    out, section, block, lang, start = [], "", None, "", 0
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if block is None and line.startswith("## "):
            section = line[3:].strip()
        if block is None and line.startswith("```") and line.strip() != "```":
            block, lang, start = [], line[3:].strip(), n + 1
        elif block is not None and line.strip() == "```":
            out.append((section, start, lang, "\n".join(block)))
            block = None
        elif block is not None:
            block.append(line)
    return out


def shell_blocks() -> list[tuple[str, int, str]]:
    blocks = []
    for doc in DOCS:
        for section, line, lang, text in fences(doc):
            if SHELL_FENCE.match(f"```{lang}"):
                blocks.append((f"{doc.relative_to(REPO)}:{line} ({section})", line, text))
    return blocks


def lay_out_clone(root: Path) -> None:
    for part in CLONE_PARTS:
        (root / part).symlink_to(REPO / part)
    for _, _, lang, text in fences(REPO / "README.md"):
        first = text.splitlines()[0] if text else ""
        if lang == "yaml" and re.match(r"^# [\w./-]+$", first):
            (root / first[2:]).parent.mkdir(parents=True, exist_ok=True)
            (root / first[2:]).write_text(text + "\n")


FETCHED_BY_HAND = r"""__fetched_by_hand() {  # a name with an extension is a file, else a folder
  local p
  for p in "$@"; do
    if [[ "$(basename "$p")" == *.* ]]; then mkdir -p "$(dirname "$p")"; : > "$p"
    else mkdir -p "$p"; fi
  done
}"""


def run_readme(root: Path, blocks) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """All blocks in one bash session (exports carry over, as in a terminal), each announced."""
    shims = root / ".shims"
    shims.mkdir()
    for name in SHIMS:
        wrapper = shims / name
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{REPO}/tests/readme/shim.py" '
                           f'"$(basename "$0")" "$@"\n')
        wrapper.chmod(0o755)
    # the shim reads its own name from argv[0]: hand it over as the first argument
    script = ["set -eo pipefail", FETCHED_BY_HAND]
    for where, _, text in blocks:
        script.append(f"echo {shlex.quote('=== ' + where)}")
        # '# fetched by hand: PATH...' (what the user puts in place): the files appear here
        script.append(re.sub(r"^# fetched by hand: (.*)$",
                             lambda m: "__fetched_by_hand " + shlex.join(m.group(1).split()),
                             text, flags=re.M))
    (root / ".readme.sh").write_text("\n".join(script) + "\n")
    log = root / ".readme.log"
    env = offline_env(PATH=f"{shims}:/usr/bin:/bin", SVP_README_LOG=str(log),
                      SVP_README_PYTHON=sys.executable, SVP_PYTHON="python")
    for k in ("SVP_DATASET_REGISTRY", "DRY_RUN", "VIRTUAL_ENV"):
        env.pop(k, None)
    proc = subprocess.run(["/bin/bash", ".readme.sh"], cwd=root, env=env, text=True,
                          capture_output=True, timeout=900)
    steps = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    return proc, steps


def swift_parser_errors(steps: list[dict]) -> list[str]:
    """Every swift command through ms-swift's own parser (flags, types, choices); the
    dataclasses' __post_init__ (model download, file checks) is not run."""
    from swift import arguments as a
    from swift.utils.utils import _patch_get_type_hints
    from transformers import HfArgumentParser

    classes = {"sft": a.SftArguments, "pt": a.PretrainArguments, "rlhf": a.RLHFArguments,
               "infer": a.InferArguments, "export": a.ExportArguments,
               "deploy": a.DeployArguments, "rollout": a.RolloutArguments,
               "eval": a.EvalArguments, "app": a.AppArguments}
    parsers, errors = {}, []
    for step in steps:
        if step["kind"] != "swift":
            continue
        sub, *args = step["argv"]
        if sub not in classes:
            errors.append(f"swift {sub}: no such subcommand")
            continue
        if sub not in parsers:
            with _patch_get_type_hints():
                parsers[sub] = HfArgumentParser([classes[sub]])
        try:
            _, rest = parsers[sub].parse_known_args(args)
        except SystemExit:
            errors.append(f"swift {shlex.join(step['argv'])[:300]}: ms-swift's parser refused "
                          f"it (from {step['source']})")
            continue
        if rest:
            errors.append(f"swift {sub}: unknown arguments {rest} (from {step['source']})")
    return errors


class _Parsed(Exception):
    pass


def tool_parser_errors(steps: list[dict]) -> list[str]:
    """Every data_tools command through the tool's own argparse: its main() is run until
    parse_args returns, then stopped."""
    errors = []
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    argparse.ArgumentParser.parse_args = parse_then_stop
    try:
        for step in steps:
            if step["kind"] != "tool":
                continue
            name, *args = step["argv"]
            old_argv = sys.argv
            sys.argv = [name, *args]
            try:
                runpy.run_path(str(REPO / "data_tools" / name), run_name="__main__")
                errors.append(f"{name}: finished without parsing arguments")
            except _Parsed:
                pass
            except SystemExit as exc:
                errors.append(f"python data_tools/{name} {shlex.join(args)[:200]}: its parser "
                              f"refused it (exit {exc.code})")
            finally:
                sys.argv = old_argv
    finally:
        argparse.ArgumentParser.parse_args = original
    return errors


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("clone")
    lay_out_clone(root)
    blocks = shell_blocks()
    proc, steps = run_readme(root, blocks)
    return root, blocks, proc, steps


def test_every_readme_command_runs_in_order(readme_run):
    """Each block runs after the ones above it; a step reading what no earlier step wrote,
    a recipe whose dry run refuses its settings, or an unknown command stops it."""
    root, blocks, proc, steps = readme_run
    assert proc.returncode == 0, (
        "README block failed:\n" + "\n".join(proc.stdout.splitlines()[-15:]) + "\n"
        + proc.stderr[-3000:])
    # a step run in the background (the CoVT cache loop) fails without stopping the shell
    assert "README step failed" not in proc.stderr, proc.stderr[-3000:]
    announced = [ln[4:] for ln in proc.stdout.splitlines() if ln.startswith("=== ")]
    assert announced == [where for where, _, _ in blocks]
    kinds = {s["kind"] for s in steps}
    assert {"swift", "tool", "recipe", "pip", "download"} <= kinds, kinds


def test_every_swift_command_parses_with_ms_swift(readme_run):
    _, _, proc, steps = readme_run
    assert proc.returncode == 0
    swift_steps = [s for s in steps if s["kind"] == "swift"]
    assert len(swift_steps) >= 20
    assert swift_parser_errors(steps) == []


def test_every_data_tool_command_parses(readme_run):
    _, _, proc, steps = readme_run
    assert proc.returncode == 0
    assert tool_parser_errors(steps) == []


def test_shell_blocks_hold_no_placeholder():
    """No shell fence of README.md or docs/ (all of them are run above) uses a placeholder a
    shell cannot run: ``...``, ``checkpoint-N`` or ``<name>`` outside comments."""
    for where, _, text in shell_blocks():
        code = "\n".join(ln.split("#", 1)[0] for ln in text.splitlines())
        for bad in ("...", "checkpoint-N"):
            assert bad not in code, (where, bad)
        assert not re.search(r"<[a-z_]+>", code), where


def test_readme_figures_are_the_benchmarks():
    """The README's measured figures are bench/results.md's table (bench/run_all.py writes
    both); prose that cites a benchmark types no figure of its own (they went stale: the crop
    template was quoted at 0.99 of stock while the table said 0.74)."""
    from bench.run_all import readme_with_results

    readme = (REPO / "README.md").read_text()
    results = (REPO / "bench" / "results.md").read_text()
    assert readme_with_results(readme, results) == readme, \
        "README's bench-results block differs from bench/results.md: run bench/run_all.py"
    prose = readme.split("<!-- bench-results -->")[0]
    for paragraph in re.split(r"\n\s*\n|\n(?=- )", prose):
        if "bench/bench_" in paragraph:
            typed = re.findall(r"\b\d[\d,]*(?:\.\d+)?\s*(?:x\b|/s\b|MB\b|completions/s)",
                               paragraph)
            assert not typed, (typed, paragraph[:200])


def test_files_the_docs_cite_exist():
    """A file of ours that README.md, docs/ or a recipe names is in the repository (they
    cited notes/neo.md, which a clone does not have)."""
    cited = re.compile(r"(?<![\w/])((?:docs|notes|bench|tests|recipes|data_tools|plugins|svp|"
                       r"requirements)/[\w./-]*\w\.(?:md|py|sh|txt|json))")
    texts = [*DOCS, *sorted((REPO / "recipes").glob("*.sh"))]
    missing = sorted({(t.name, m) for t in texts for m in cited.findall(t.read_text())
                      if not (REPO / m).exists()})
    assert not missing, missing


def test_demo_table_lists_every_demo_stage():
    """README's 'What the demo report shows' names every stage data_tools/demo.py runs (NEO's
    was missing)."""
    from data_tools.demo import STAGES

    readme = (REPO / "README.md").read_text()
    table = readme.split("## What the demo report shows", 1)[1].split("\n\n|", 1)[1]
    table = table.split("\n\n", 1)[0]
    named = set(re.findall(r"`(\w+)`", "\n".join(ln.split("|")[2] for ln in
                                                table.splitlines()[2:])))
    assert named == {s.name for s in STAGES}
