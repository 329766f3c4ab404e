"""Typed settings read from the environment: the one mechanism behind every ``SVP_*`` variable.

Environment variables are how settings reach ms-swift processes and their dataloader workers:
ms-swift refuses command-line flags it does not know, and uses the environment itself
(``MAX_PIXELS``, ``get_env_args``). Each capability declares its variables once, as the
fields of a frozen dataclass in its own ``settings.py`` (``env(...)`` below: name, default,
parser, one line of documentation). :func:`load` is the only place that reads them:

- every value is parsed and validated, and a bad one raises :class:`SettingsError` naming the
  variable, the value and what is expected, before any training starts;
- the values in force are logged once per process (again only if the environment changes, as
  it does between tests), through the ``swift`` logger hierarchy so they land in ms-swift's
  log; anything secret (``secret=True``, or a name with KEY / TOKEN / SECRET / PASSWORD in
  it) is shown as ``<set>``, never its value, and credentials inside a URL are redacted;
- code below the ms-swift layer receives the settings object (or plain values) as arguments
  and never looks at ``os.environ`` itself (``tests/test_layering.py`` enforces it).

The README's settings tables are generated from the same fields (:func:`markdown_table`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

logger = logging.getLogger("swift.svp.settings")
T = TypeVar("T")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.I)
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_UNSET = object()


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def env(name: str, default: Any, parse: Callable[[str], Any], doc: str,
        secret: bool = False) -> Any:
    """A dataclass field read from environment variable ``name`` (unset or empty: ``default``).

    ``parse`` turns the text into the value and raises ``ValueError`` with the reason when it
    cannot; ``doc`` is the line shown in the README table and the start-up log.
    """
    meta = {"env": name, "parse": parse, "doc": doc, "secret": secret}
    if isinstance(default, dict | list | set):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def variables(cls: type) -> list[dataclasses.Field]:
    """The fields of a settings class that come from the environment, in declaration order."""
    return [f for f in dataclasses.fields(cls) if "env" in f.metadata]


def is_secret(field: dataclasses.Field) -> bool:
    return bool(field.metadata["secret"] or _SECRET_NAME.search(field.metadata["env"]))


def shown(field: dataclasses.Field, value: Any) -> str:
    """How a value appears in logs: secrets never, None as 'unset'."""
    if value is None or value == () or value == {}:
        return "unset"
    if is_secret(field):
        return "<set>"
    return _URL_USERINFO.sub("<redacted>@", display(value))  # http://user:token@host


def display(value: Any) -> str:
    """A value as its variable would be written: ``1``/``0``, ``a:b`` paths, ``k=v,...``."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple | list):
        return os.pathsep.join(map(str, value))
    if isinstance(value, dict):
        return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in value.items())
    return str(value)


def parse(cls: type[T], environ: Mapping[str, str]) -> T:
    """Build ``cls`` from ``environ`` (any mapping); raises :class:`SettingsError`."""
    values = {}
    for f in variables(cls):
        name, text = f.metadata["env"], environ.get(f.metadata["env"])
        if text is None or not text.strip():
            continue  # the dataclass default
        try:
            values[f.name] = f.metadata["parse"](text.strip())
        except (ValueError, TypeError) as exc:
            value = "<set>" if is_secret(f) else repr(text)
            raise SettingsError(f"{name}={value}: {exc}") from exc
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:  # cross-field checks in __post_init__
        if isinstance(exc, SettingsError):
            raise
        raise SettingsError(str(exc)) from exc


_cache: dict[tuple, Any] = {}
_lock = threading.Lock()


def load(cls: type[T], capability: str, environ: Mapping[str, str] | None = None) -> T:
    """The settings of one capability from the environment, parsed and logged once per
    distinct set of values (so once per process in a real run)."""
    environ = os.environ if environ is None else environ
    fields = variables(cls)
    key = (cls, tuple(environ.get(f.metadata["env"]) for f in fields))
    with _lock:
        hit = _cache.get(key, _UNSET)
    if hit is not _UNSET:
        return hit
    settings = parse(cls, environ)
    with _lock:
        _cache[key] = settings
    logger.info(describe(settings, capability))
    return settings


def describe(settings: Any, capability: str) -> str:
    """``svp <capability> settings: NAME=value (default), ...`` with secrets redacted."""
    parts = []
    for f in variables(type(settings)):
        value = getattr(settings, f.name)
        mark = " (default)" if _is_default(f, value) else ""
        parts.append(f"{f.metadata['env']}={shown(f, value)}{mark}")
    return f"svp {capability} settings: " + ", ".join(parts)


def _is_default(field: dataclasses.Field, value: Any) -> bool:
    if field.default is not dataclasses.MISSING:
        return value == field.default
    if field.default_factory is not dataclasses.MISSING:
        return value == field.default_factory()
    return False


def markdown_table(cls: type) -> str:
    """The README table of a settings class: variable, default, meaning."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in variables(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = f.default_factory()
        text = "unset" if default in (None, {}, ()) else f"`{display(default)}`"
        doc = f.metadata["doc"].replace("|", "\\|")  # pipes inside a table cell
        rows.append(f"| `{f.metadata['env']}` | {text} | {doc} |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- parsers
def boolean(text: str) -> bool:
    """1/0, true/false, yes/no, on/off (any case)."""
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1/0 (or true/false)")


def integer(minimum: int | None = None) -> Callable[[str], int]:
    def parse_int(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError("expected an integer") from None
        if minimum is not None and value < minimum:
            raise ValueError(f"must be >= {minimum}")
        return value
    return parse_int


def number(minimum: float | None = None, positive: bool = False) -> Callable[[str], float]:
    def parse_float(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError("expected a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("must be finite")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be >= {minimum:g}")
        if positive and value <= 0:
            raise ValueError("must be > 0")
        return value
    return parse_float


def choice(*options: str) -> Callable[[str], str]:
    def parse_choice(text: str) -> str:
        value = text.lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return value
    return parse_choice


def text(value: str) -> str:
    return value


def path_list(value: str) -> tuple[str, ...]:
    """``os.pathsep``-separated paths (``a.yaml:b.yaml``)."""
    return tuple(p for p in value.split(os.pathsep) if p)


# ----------------------------------------------------------------------------- image budget
# qwen_vl_utils' own bounds (0.0.14) in merged-patch tokens when neither MAX_PIXELS nor
# IMAGE_MAX_TOKEN_NUM is set
DEFAULT_MIN_TOKENS, DEFAULT_MAX_TOKENS = 4, 16384
QWEN_FACTORS = (28, 32)  # pixels per merged patch: Qwen2.5-VL, Qwen3-VL


def qwen_pixel_bounds(factor: int, environ: Mapping[str, str] | None = None
                      ) -> tuple[int, int]:
    """(min_pixels, max_pixels) of the Qwen processor in an ms-swift process started with this
    environment, resolved as ms-swift resolves them when it loads the processor
    (``compat_qwen_vl_utils`` then ``patch_qwen_vl_utils``): ``IMAGE_MAX_TOKEN_NUM`` if set,
    else ``MAX_PIXELS // factor**2`` tokens, else qwen_vl_utils' default; the same for the
    minimum. These are not ``SVP_*`` variables (ms-swift and qwen_vl_utils read them), but a
    value they cannot use stops here with its name: not a whole number, below one merged
    patch (``0`` and ``1`` used to fall back to the 12845056-pixel default without a word),
    or a minimum above the maximum."""
    env = os.environ if environ is None else environ

    def tokens(token_var: str, pixel_var: str, default: int) -> int:
        for var, scale in ((token_var, 1), (pixel_var, factor ** 2)):
            raw = env.get(var)
            if raw is None or not raw.strip():
                continue
            try:
                value = int(raw)
            except ValueError:
                raise SettingsError(f"{var}={raw!r}: expected a whole number") from None
            if value // scale < 1:
                unit = ("token" if scale == 1
                        else f"merged patch ({scale} pixels at {factor}x{factor})")
                raise SettingsError(f"{var}={raw!r}: below one {unit}")
            return value // scale
        return default

    lo = tokens("IMAGE_MIN_TOKEN_NUM", "MIN_PIXELS", DEFAULT_MIN_TOKENS)
    hi = tokens("IMAGE_MAX_TOKEN_NUM", "MAX_PIXELS", DEFAULT_MAX_TOKENS)
    if lo > hi:
        raise SettingsError(f"the image budget's minimum ({lo * factor ** 2} pixels, "
                            f"MIN_PIXELS / IMAGE_MIN_TOKEN_NUM) is above its maximum "
                            f"({hi * factor ** 2}, MAX_PIXELS / IMAGE_MAX_TOKEN_NUM)")
    return lo * factor ** 2, hi * factor ** 2


def qwen_budgets(environ: Mapping[str, str] | None = None) -> list[tuple[int, int, int]]:
    """(factor, min_pixels, max_pixels) for Qwen2.5-VL and Qwen3-VL under this environment:
    what the image checks resize with when the model family is not known."""
    return [(f, *qwen_pixel_bounds(f, environ)) for f in QWEN_FACTORS]


# ----------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    """``python -m svp.common.settings CAPABILITY...``: validate each capability's variables
    (and the files they name, where a settings class has ``check_files``) and the image
    budget (``MAX_PIXELS`` ..., :func:`qwen_pixel_bounds`), and print the values in force
    (secrets redacted); exit 2 naming the bad variable. The
    recipes call it before launching, so a typo stops them in a second, not after the model
    has loaded on every GPU."""
    import importlib
    import sys

    names = sys.argv[1:] if argv is None else argv
    markdown = "--markdown" in names  # anywhere on the line
    names = [n for n in names if n != "--markdown"]
    if not names:
        print("usage: python -m svp.common.settings [--markdown] CAPABILITY... "
              "(dataset_registry, masktok, croptool, covt)", file=sys.stderr)
        return 2
    for cap in names:
        try:
            module = importlib.import_module(f"svp.{cap}.settings")
        except ModuleNotFoundError:
            print(f"error: no capability {cap!r} (no module svp.{cap}.settings)", file=sys.stderr)
            return 2
        if markdown:  # the README table of this capability
            print(markdown_table(_settings_class(module)))
            continue
        try:
            config = module.load()
            print(describe(config, cap))
            if hasattr(config, "check_files"):
                config.check_files()
        except SettingsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if not markdown:  # the image budget ms-swift and qwen_vl_utils read, for either family
        try:
            for factor in QWEN_FACTORS:
                qwen_pixel_bounds(factor)
        except SettingsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0


def _settings_class(module) -> type:
    """The settings dataclass a capability's settings module defines."""
    classes = [v for v in vars(module).values() if isinstance(v, type)
               and dataclasses.is_dataclass(v) and v.__module__ == module.__name__]
    if len(classes) != 1:
        raise RuntimeError(f"{module.__name__} must define exactly one settings dataclass")
    return classes[0]


if __name__ == "__main__":  # run the imported module's main: one SettingsError class
    from svp.common import settings as _module

    raise SystemExit(_module.main())
