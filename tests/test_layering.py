"""The layout's rules, checked on the source (ast, not grep, so a string or a comment that
mentions ms-swift does not count and an import inside a function does):

1. Only files named for the framework (``swift_*.py``) import ms-swift; everything else in the
   package is usable and testable without it. Entry files in ``plugins/`` only import
   ``svp`` and call ``register``.
2. Only the settings modules read the environment (``os.environ``, ``os.getenv``,
   ``os.putenv``); everything else gets settings as arguments.
3. Nothing edits ``sys.modules`` or ``sys.path`` (the package is installed, not found by
   path tricks).
4. Test and demo fixtures (``svp.testing``) are not imported by the runtime package, and
   ``svp.common`` imports no capability.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "svp"
SETTINGS_FILES = {PACKAGE / "common" / "settings.py",
                  *PACKAGE.glob("*/settings.py")}


def python_files(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def imported_modules(tree: ast.AST) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def attribute_uses(tree: ast.AST, module: str, attrs: tuple[str, ...]) -> list[int]:
    """Lines that touch ``module.<attr>`` for any of ``attrs`` (or import them by name)."""
    lines = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == module and node.attr in attrs):
            lines.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and node.module == module and any(
                a.name in attrs for a in node.names):
            lines.append(node.lineno)
    return lines


def environment_reads(tree: ast.AST) -> list[int]:
    return attribute_uses(tree, "os", ("environ", "getenv", "putenv"))


def path_or_module_edits(tree: ast.AST) -> list[int]:
    return attribute_uses(tree, "sys", ("path", "modules"))


def parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(), filename=str(path))


def test_only_swift_files_import_ms_swift():
    offenders = []
    for path in python_files(PACKAGE):
        uses_swift = any(m == "swift" or m.startswith("swift.") for m in
                         imported_modules(parse(path)))
        if uses_swift and not path.name.startswith("swift_"):
            offenders.append(str(path.relative_to(REPO)))
    assert not offenders, f"ms-swift imported outside swift_*.py files: {offenders}"


def test_only_settings_modules_read_the_environment():
    offenders = {str(p.relative_to(REPO)): lines for p in python_files(PACKAGE, REPO / "plugins")
                 if p not in SETTINGS_FILES and (lines := environment_reads(parse(p)))}
    assert not offenders, f"environment read outside the settings modules: {offenders}"


def test_nothing_edits_sys_path_or_sys_modules():
    roots = [PACKAGE, REPO / "plugins", REPO / "data_tools", REPO / "bench"]
    offenders = {str(p.relative_to(REPO)): lines for p in python_files(*roots)
                 if (lines := path_or_module_edits(parse(p)))}
    assert not offenders, f"sys.path / sys.modules edited: {offenders}"


def test_runtime_package_does_not_import_the_testing_fixtures():
    offenders = [str(p.relative_to(REPO)) for p in python_files(PACKAGE)
                 if "testing" not in p.parts and any(
                     m == "svp.testing" or m.startswith("svp.testing.")
                     for m in imported_modules(parse(p)))]
    assert not offenders, f"runtime modules import svp.testing: {offenders}"


@pytest.mark.parametrize("entry", sorted((REPO / "plugins").glob("*.py")), ids=lambda p: p.name)
def test_entry_files_only_import_and_register(entry):
    """An entry's body: its docstring, imports from ``svp``, and calls of ``register()``."""
    tree = parse(entry)
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstring
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("svp"):
            continue
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                and not node.value.args and not node.value.keywords):
            func = node.value.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "register":
                continue
        pytest.fail(f"{entry.name}:{node.lineno}: an entry file only imports from svp and "
                    f"calls register(), found {ast.dump(node)[:80]}")


def test_every_capability_has_one_settings_module_and_its_tests():
    capabilities = sorted(p.name for p in PACKAGE.iterdir()
                          if p.is_dir() and (p / "__init__.py").exists()
                          and p.name not in ("common", "testing", "serve", "evaluation"))
    assert capabilities == ["covt", "croptool", "dataset_registry", "masktok", "neo"]
    for cap in capabilities:
        assert (PACKAGE / cap / "settings.py").is_file(), cap
        assert (REPO / "tests" / cap).is_dir(), cap


def test_common_helpers_depend_on_no_capability():
    """svp/common is what two or more capabilities use; it never reaches into one of them
    (a capability may use common, not the other way round)."""
    caps = ("svp.dataset_registry", "svp.masktok", "svp.croptool", "svp.covt", "svp.neo")
    offenders = {str(p.relative_to(REPO)): sorted(m for m in imported_modules(parse(p))
                                                  if m.startswith(caps))
                 for p in python_files(PACKAGE / "common")}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"svp/common imports a capability: {offenders}"


def test_capabilities_do_not_reach_into_the_serving_or_evaluation_layer():
    """svp/serve sits on top of the capabilities (it runs their loops behind an API) and
    svp/evaluation on top of both (it asks a served model); nothing imports a layer above
    itself: no capability or svp/common imports either, and svp/serve not svp/evaluation."""
    above = {"serve": ("serve", "evaluation"), "evaluation": ("evaluation",)}
    offenders = []
    for layer, allowed in above.items():
        pkg = f"svp.{layer}"
        offenders += [str(p.relative_to(REPO)) for p in python_files(PACKAGE)
                      if p.relative_to(PACKAGE).parts[0] not in allowed and any(
                          m == pkg or m.startswith(pkg + ".")
                          for m in imported_modules(parse(p)))]
    assert not offenders, f"imports of a layer above: {offenders}"
