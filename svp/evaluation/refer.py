"""Referring-segmentation benchmarks in their standard layout, as samples with targets.

The layout is the REFER API's (``refer.py`` of the RefCOCO line) and gRefCOCO's::

    DATA/refcoco/refs(unc).p   DATA/refcoco/instances.json      splits val testA testB
    DATA/refcoco+/refs(unc).p  DATA/refcoco+/instances.json     splits val testA testB
    DATA/refcocog/refs(umd).p  DATA/refcocog/instances.json     splits val test
    DATA/grefcoco/grefs(unc).json DATA/grefcoco/instances.json  splits val testA testB

with the pictures in COCO ``train2014`` (``--image_root``). Every sentence of every ref in the
split is one sample whose target is the union of its annotations' masks (none for gRefCOCO's
no-target expressions), as LISA, Sa2VA and SAMTok evaluate. The pickles are read with
:mod:`svp.evaluation.safe_pickle`, never ``pickle.load``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from svp.evaluation.safe_pickle import load_plain
from svp.masktok.gres_data import GresSample, read_json, samples_from_refs


@dataclass(frozen=True)
class ReferSet:
    """One dataset of the family: its folder, refs file and the splits papers report."""

    name: str
    refs_file: str
    splits: tuple[str, ...]

    def refs_path(self, root: Path) -> Path:
        return root / self.name / self.refs_file

    def instances_path(self, root: Path) -> Path:
        return root / self.name / "instances.json"


REFER_SETS = {s.name: s for s in (
    ReferSet("refcoco", "refs(unc).p", ("val", "testA", "testB")),
    ReferSet("refcoco+", "refs(unc).p", ("val", "testA", "testB")),
    ReferSet("refcocog", "refs(umd).p", ("val", "test")),
    ReferSet("grefcoco", "grefs(unc).json", ("val", "testA", "testB")),
)}

ALL_SPLITS = tuple(f"{s.name}:{split}" for s in REFER_SETS.values() for split in s.splits)


def parse_splits(spec: str) -> list[tuple[str, str]]:
    """``all``, a dataset name (its splits) or ``name:split``, comma-separated ->
    [(dataset, split)] in the given order; unknown names raise with the known ones."""
    out: list[tuple[str, str]] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part == "all":
            out += [tuple(s.split(":")) for s in ALL_SPLITS]
            continue
        name, _, split = part.partition(":")
        if name not in REFER_SETS:
            raise ValueError(f"unknown referring-segmentation set {name!r}; known: "
                             f"{', '.join(REFER_SETS)} (or 'all')")
        known = REFER_SETS[name].splits
        if split and split not in known:
            raise ValueError(f"{name} has no split {split!r} in the standard protocol; "
                             f"known: {', '.join(known)}")
        out += [(name, s) for s in ([split] if split else known)]
    if not out:
        raise ValueError("no split named")
    return list(dict.fromkeys(out))


def load_split(root: str | Path, dataset: str, split: str,
               problems: list[str] | None = None) -> tuple[list[GresSample], dict]:
    """Samples of one split and the counted skips (see :func:`samples_from_refs`)."""
    spec = REFER_SETS[dataset]
    root = Path(root)
    refs_path, inst_path = spec.refs_path(root), spec.instances_path(root)
    for p in (refs_path, inst_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"{p} not found: {dataset} is read from DATA/{dataset}/{spec.refs_file} and "
                f"DATA/{dataset}/instances.json (the REFER / gRefCOCO layout)")
    refs = read_json(refs_path) if refs_path.suffix == ".json" else load_plain(refs_path)
    samples, skipped = samples_from_refs(refs, str(refs_path), read_json(inst_path),
                                         str(inst_path), split, problems)
    if not samples:
        raise ValueError(f"{refs_path}: no sentence in split {split!r}")
    return samples, skipped


def sample_id(dataset: str, split: str, sample: GresSample) -> str:
    """Stable per-sentence id; for gRefCOCO the one ``eval_gres.py`` uses (``gres:SPLIT:
    REF:SENT``) so its predictions can be rescored there."""
    if dataset == "grefcoco":
        return f"gres:{split}:{sample.ref_id}:{sample.sent_id}"
    return f"{dataset}:{split}:{sample.ref_id}:{sample.sent_id}"
