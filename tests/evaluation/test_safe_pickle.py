"""The RefCOCO refs pickles are read with a restricted unpickler: plain data loads, anything
that would call code is refused before it runs."""

from __future__ import annotations

import os
import pickle
import pickletools

import pytest

from svp.evaluation.refer import load_split
from svp.evaluation.safe_pickle import UnsafePickleError, load_plain, loads_plain

REFS = [{"ref_id": 0, "ann_id": 7, "image_id": 3, "split": "testA", "category_id": 1,
         "sent_ids": [0, 1], "file_name": "COCO_train2014_000000000003_7.jpg",
         "sentences": [{"tokens": ["man", "left"], "raw": "Man left!", "sent_id": 0,
                        "sent": "man left"}, {"tokens": [], "raw": "", "sent_id": 1,
                                              "sent": "ünïcode"}],
         "extra": (1, 2.5, None, True, {3, 4}, frozenset({5}), b"raw")}]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_refs_load_in_every_protocol(protocol):
    assert loads_plain(pickle.dumps(REFS, protocol=protocol)) == REFS


class _Runs:
    """What a crafted pickle does: call os.system when it is loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Instance:
    pass


def _persistent() -> bytes:
    import io

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return "x" if obj == "secret" else None

    b = io.BytesIO()
    P(b, protocol=2).dump(["secret"])
    return b.getvalue()


@pytest.mark.parametrize("case", ["os.system", "eval", "instance", "persistent", "truncated"])
def test_a_crafted_refs_file_is_refused_and_runs_nothing(case, tmp_path):
    marker = tmp_path / "ran"
    payload = {
        "os.system": lambda: pickle.dumps([{"ref_id": 0, "x": _Runs(marker)}], protocol=2),
        "eval": lambda: b"cbuiltins\neval\n(S'__import__(\"os\").system(\"touch " +
                        str(marker).encode() + b"\")'\ntR.",
        "instance": lambda: pickle.dumps([_Instance()], protocol=2),
        "persistent": _persistent,
        "truncated": lambda: pickle.dumps(REFS, protocol=2)[:-20],
    }[case]()
    if case != "truncated":
        pickletools.dis(payload, out=open(os.devnull, "w"))  # a well-formed pickle
    folder = tmp_path / "refcoco"
    folder.mkdir()
    (folder / "refs(unc).p").write_bytes(payload)
    (folder / "instances.json").write_text('{"images": [], "annotations": []}')
    with pytest.raises(UnsafePickleError) as err:
        load_split(tmp_path, "refcoco", "val")
    assert "refs(unc).p" in str(err.value)
    assert not marker.exists()
    if case in ("os.system", "eval"):
        assert "refused" in str(err.value)
    # what a plain pickle.load would have done: the guard is what stops it
    if case == "os.system":
        pickle.loads(payload)
        assert marker.exists()


def test_load_plain_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="refs"):
        load_plain(tmp_path / "refs(unc).p")
