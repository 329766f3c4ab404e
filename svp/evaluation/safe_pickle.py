"""Read the RefCOCO ``refs(unc|umd|google).p`` pickles without running a downloaded pickle.

A pickle can name any importable callable and have it called while it loads; that is how
crafted pickles run code. These files only ever hold lists, dicts, strings and numbers, which
the pickle machine builds with its own opcodes, never through a global. So the unpickler here
resolves no global at all except the two builtin set types (protocol 2 writes ``set`` and
``frozenset`` through a global) and the text-to-latin-1 call older protocols write ``bytes``
with, refuses persistent ids, and the loaded object is then walked
to check that it holds nothing else.
"""

from __future__ import annotations

import builtins
import io
import pickle
from pathlib import Path

# (module, name) a plain-data pickle may refer to: the set types, which protocols 0-3 write
# as a call of the builtin (Python 2 spelled the module __builtin__)
_ALLOWED_GLOBALS = {(m, n) for m in ("builtins", "__builtin__") for n in ("set", "frozenset")}


def _latin1_bytes(text, encoding):
    """Protocols 0-2 write Python 3 ``bytes`` as ``_codecs.encode(text, 'latin1')``; only
    that exact call is answered."""
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafePickleError("refused: _codecs.encode other than text to latin-1 bytes")
    return text.encode("latin1")
_PLAIN = (dict, list, tuple, set, frozenset, str, bytes, int, float, bool, complex,
          type(None))


class UnsafePickleError(pickle.UnpicklingError):
    """The file asks for something other than plain containers, strings and numbers."""


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, f, where: str):
        # latin-1: RefCOCO's pickles were written by Python 2; its byte strings are text
        super().__init__(f, encoding="latin1")
        self.where = where

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return getattr(builtins, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        raise UnsafePickleError(
            f"{self.where}: refused: the pickle asks for {module}.{name}; only plain "
            "containers, strings and numbers are read (a refs file never needs more)")

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.where}: refused: the pickle uses a persistent id")


def _check_plain(obj, where: str, depth: int = 0) -> None:
    if depth > 64:
        raise UnsafePickleError(f"{where}: refused: nested deeper than 64 levels")
    if not isinstance(obj, _PLAIN) or type(obj) not in _PLAIN:
        raise UnsafePickleError(f"{where}: refused: holds a {type(obj).__name__}")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, where, depth + 1)
            _check_plain(v, where, depth + 1)
    elif isinstance(obj, list | tuple | set | frozenset):
        for v in obj:
            _check_plain(v, where, depth + 1)


def loads_plain(data: bytes, where: str = "<bytes>"):
    """Unpickle ``data`` if it holds only plain data, else raise :class:`UnsafePickleError`
    (nothing the pickle names is ever called)."""
    try:
        obj = _PlainUnpickler(io.BytesIO(data), where).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated or not a pickle at all
        raise UnsafePickleError(f"{where}: not a readable pickle ({exc})") from exc
    _check_plain(obj, where)
    return obj


def load_plain(path: str | Path):
    """:func:`loads_plain` on a file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    return loads_plain(path.read_bytes(), str(path))
