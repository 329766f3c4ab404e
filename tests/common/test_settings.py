"""The settings mechanism every capability uses: parsing, errors naming the variable, logged
once with secrets redacted, the README tables generated from the same fields."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

from svp.common import settings as s
from tests.helpers import REPO, offline_env

CAPABILITIES = ("dataset_registry", "masktok", "croptool", "covt", "neo")


@dataclass(frozen=True)
class Demo:
    size: int = s.env("SVP_TEST_SIZE", 4, s.integer(minimum=1), "a size")
    on: bool = s.env("SVP_TEST_ON", True, s.boolean, "a switch")
    token: str | None = s.env("SVP_TEST_TOKEN", None, s.text, "a credential")
    hidden: str | None = s.env("SVP_TEST_PLAIN", None, s.text, "marked secret", secret=True)
    url: str | None = s.env("SVP_TEST_URL", None, s.text, "an endpoint")


def test_defaults_parsing_and_errors_that_name_the_variable():
    assert s.parse(Demo, {}) == Demo()
    got = s.parse(Demo, {"SVP_TEST_SIZE": " 9 ", "SVP_TEST_ON": "off", "SVP_TEST_URL": ""})
    assert (got.size, got.on, got.url) == (9, False, None)  # empty = unset = default
    with pytest.raises(s.SettingsError, match=r"^SVP_TEST_SIZE='0': must be >= 1$"):
        s.parse(Demo, {"SVP_TEST_SIZE": "0"})
    with pytest.raises(s.SettingsError, match=r"^SVP_TEST_ON='maybe': expected 1/0"):
        s.parse(Demo, {"SVP_TEST_ON": "maybe"})


SECRETS = {"SVP_TEST_TOKEN": "tok-123456", "SVP_TEST_PLAIN": "pw-abcdef",
           "SVP_TEST_URL": "https://alice:s3cr3t@judge.example/v1"}


def test_secrets_never_reach_the_log(caplog):
    with caplog.at_level(logging.INFO, logger="swift.svp.settings"):
        s.load(Demo, "demo", SECRETS)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "SVP_TEST_TOKEN=<set>" in text and "SVP_TEST_PLAIN=<set>" in text
    assert "https://<redacted>@judge.example/v1" in text
    for secret in ("tok-123456", "pw-abcdef", "s3cr3t", "alice"):
        assert secret not in text
    with pytest.raises(s.SettingsError) as err:  # nor an error message
        s.parse(_BadSecret, {"SVP_TEST_KEY_N": "sk-live-999"})
    assert "sk-live-999" not in str(err.value) and "SVP_TEST_KEY_N=<set>" in str(err.value)


@dataclass(frozen=True)
class _BadSecret:
    n: int = s.env("SVP_TEST_KEY_N", 1, s.integer(), "an integer whose name says KEY")


def test_the_judge_key_is_redacted_in_the_log_and_the_recipe_check(caplog):
    from svp.croptool import settings as crop

    with caplog.at_level(logging.INFO, logger="swift.svp.settings"):
        crop.load({"SVP_JUDGE_URL": "http://h/v1", "SVP_JUDGE_API_KEY": "sk-very-secret"})
    assert "SVP_JUDGE_API_KEY=<set>" in caplog.text and "sk-very-secret" not in caplog.text
    out = subprocess.run([sys.executable, "-m", "svp.common.settings", "croptool"],
                         capture_output=True, text=True, timeout=60,
                         env=offline_env(SVP_JUDGE_API_KEY="sk-very-secret"))
    assert out.returncode == 0, out.stderr
    assert "SVP_JUDGE_API_KEY=<set>" in out.stdout and "sk-very-secret" not in out.stdout


def test_logged_once_per_process_and_again_only_when_the_values_change(caplog):
    env = {"SVP_TEST_SIZE": "5"}
    with caplog.at_level(logging.INFO, logger="swift.svp.settings"):
        first = s.load(Demo, "demo", env)
        assert s.load(Demo, "demo", dict(env)) is first  # same values: cached, not re-logged
        s.load(Demo, "demo", {"SVP_TEST_SIZE": "6"})
    lines = [r.getMessage() for r in caplog.records if "svp demo settings" in r.getMessage()]
    assert len(lines) == 2
    assert lines[0].startswith("svp demo settings: SVP_TEST_SIZE=5, SVP_TEST_ON=1 (default)")


def test_cli_prints_the_values_and_exits_2_naming_the_variable(tmp_path):
    registry = tmp_path / "datasets.yaml"
    registry.write_text("x: {annotation_path: a.jsonl}\n")
    ok = subprocess.run([sys.executable, "-m", "svp.common.settings", *CAPABILITIES],
                        capture_output=True, text=True, timeout=60,
                        env=offline_env(SVP_COVT_BACKEND="standin",
                                        SVP_DATASET_REGISTRY=str(registry)))
    assert ok.returncode == 0, ok.stderr
    assert [ln.split(":")[0] for ln in ok.stdout.splitlines()] == [
        f"svp {c} settings" for c in CAPABILITIES]
    bad = subprocess.run([sys.executable, "-m", "svp.common.settings", "masktok"],
                         capture_output=True, text=True, timeout=60,
                         env=offline_env(SVP_MASK_LOSS_WEIGHT="-1"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: SVP_MASK_LOSS_WEIGHT='-1'")
    # the README-table flag may come after the capability too
    table = subprocess.run([sys.executable, "-m", "svp.common.settings", "neo", "--markdown"],
                           capture_output=True, text=True, timeout=60, env=offline_env())
    assert table.returncode == 0 and table.stdout.startswith("| variable | default | meaning |")


@pytest.mark.parametrize("cap", CAPABILITIES)
def test_readme_settings_tables_are_the_settings_modules(cap):
    """The README shows each capability's table between settings markers; regenerate it with
    ``python -m svp.common.settings --markdown CAP`` when a setting changes."""
    import importlib

    readme = (REPO / "README.md").read_text()
    block = re.search(rf"<!-- settings:{cap} -->\n(.*?)\n<!-- /settings -->", readme, re.S)
    assert block, f"README has no <!-- settings:{cap} --> block"
    expected = s.markdown_table(s._settings_class(importlib.import_module(f"svp.{cap}.settings")))
    assert block.group(1) == expected, f"README table of {cap} is stale; it should be:\n{expected}"


def test_every_svp_variable_named_in_the_code_is_a_declared_setting():
    """No SVP_* name in the package or the recipes that no settings module declares (a typo
    or a variable read some other way)."""
    import importlib

    declared = {f.metadata["env"] for cap in CAPABILITIES for f in s.variables(
        s._settings_class(importlib.import_module(f"svp.{cap}.settings")))}
    named = set()
    for path in [*(REPO / "svp").rglob("*.py"), *(REPO / "recipes").glob("*.sh"),
                 *(REPO / "plugins").glob("*.py"), *(REPO / "data_tools").glob("*.py")]:
        named |= set(re.findall(r"\bSVP_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    unknown = sorted(n for n in named - declared
                     if not n.startswith("SVP_COVT_<") and n != "SVP_PYTHON")
    assert unknown == [], f"SVP_* names that no settings module declares: {unknown}"
