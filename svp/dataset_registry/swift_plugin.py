"""ms-swift side of the dataset registry: registry names as datasets, and ``name%X`` sampling.

ms-swift 4.6 knows ``name#N`` (N rows) but not ``name%X`` (X percent). We teach
``DatasetSyntax.parse`` to strip ``%X`` and, once a dataset is loaded and its length known,
turn X into ms-swift's own ``dataset_sample`` count, so the rows are drawn by ms-swift's
seeded sampler (``--data_seed``) exactly as ``#N`` would draw them; above 100 the set is
repeated whole and the remainder sampled. ``%X`` works for registry names and for plain
annotation paths alike.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from datasets import Dataset as HfDataset
from swift.dataset import (
    DATASET_MAPPING,
    DatasetLoader,
    DatasetMeta,
    DatasetSyntax,
    register_dataset,
)
from swift.dataset.preprocessor import RowPreprocessor
from swift.utils import get_logger

from svp.common import swift_trainer
from svp.dataset_registry import settings
from svp.dataset_registry.registry import (
    DatasetEntry,
    RegistryError,
    load_dataset_rows,
    load_registry,
    parse_spec,
    sampled_count,
)

logger = get_logger()

_PATCH_MARK = "_svp_percent_patched"
_registry_files: list[str] = []  # what register() last loaded, for error messages


def apply_percent(dataset_syntax: DatasetSyntax, dataset: Any) -> None:
    """Turn the ``%X`` stored on a parsed syntax into ms-swift's ``dataset_sample`` count."""
    percent = getattr(dataset_syntax, "sample_percent", None)
    if percent is None:
        return
    if not hasattr(dataset, "__len__"):
        raise RegistryError(
            f"{dataset_syntax.dataset}%{percent:g}: percentage sampling needs the dataset's "
            "length; it is not available with --streaming true (use #N instead)")
    n = len(dataset)
    dataset_syntax.dataset_sample = sampled_count(n, percent)
    logger.info(f"dataset {dataset_syntax.dataset}: {percent:g}% of {n} rows -> "
                f"{dataset_syntax.dataset_sample} rows")


def _patch_dataset_syntax() -> None:
    """Idempotently wrap ``DatasetSyntax.parse`` and ``DatasetLoader.load`` for ``%X``."""
    if getattr(DatasetSyntax, _PATCH_MARK, False):
        return
    original_parse = DatasetSyntax.parse.__func__
    original_load = DatasetLoader.load

    def parse(cls, dataset: str) -> DatasetSyntax:
        name, percent = (dataset, None) if os.path.exists(dataset) else parse_spec(dataset)
        syntax = original_parse(cls, name)
        if percent is not None and syntax.dataset_sample is not None:
            raise RegistryError(f"{dataset!r}: use either #N or %X, not both")
        syntax.sample_percent = percent
        _check_known(syntax.dataset)
        return syntax

    @functools.wraps(original_load)
    def load(self, dataset_syntax=None, dataset_meta=None, *, use_hf=None):
        dataset = original_load(self, dataset_syntax, dataset_meta, use_hf=use_hf)
        apply_percent(dataset_syntax, dataset)
        return dataset

    DatasetSyntax.parse = classmethod(parse)
    DatasetLoader.load = load
    setattr(DatasetSyntax, _PATCH_MARK, True)


def _check_known(name: str) -> None:
    """A bare name (no '/') that is neither registered nor a path would go to the model hub
    and fail there after retries; say what is wrong instead."""
    if "/" in name or name in DATASET_MAPPING or os.path.exists(name):
        return
    where = (f"the registry ({', '.join(_registry_files)}) has no such name"
             if _registry_files else "no dataset registry is loaded (set SVP_DATASET_REGISTRY "
                                     "or put datasets.yaml in the working directory)")
    raise RegistryError(f"unknown dataset {name!r}: {where}, and it is not a file or folder")


class RegistryDatasetLoader(DatasetLoader):
    """Loads one registry dataset: our reader and validator, then ms-swift's preprocessing.

    Validation runs over every row before anything is trained; in strict mode (the default)
    a bad row stops the run with the full report, with ``SVP_BAD_ROWS=skip`` bad rows are
    dropped and their number reported.
    """

    def __init__(self, *args: Any, entry: DatasetEntry, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.entry = entry

    def load(self, dataset_syntax=None, dataset_meta=None, *, use_hf=None) -> HfDataset:
        if self.streaming:
            raise RegistryError(f"dataset {self.entry.name!r}: registry datasets are loaded "
                                "in memory; --streaming true is not supported for them")
        config = settings.load()
        loaded = load_dataset_rows(self.entry, skip_bad_rows=config.skip_bad_rows,
                                   images=config.image_checker())
        if loaded.skipped:
            logger.warning(f"dataset {self.entry.name!r}: skipped {loaded.skipped} bad rows "
                           f"(SVP_BAD_ROWS=skip)\n{loaded.report.format()}")
        if loaded.report.notes:
            logger.warning(f"dataset {self.entry.name!r}:\n{loaded.report.format_notes()}")
        if not loaded.rows:
            raise RegistryError(f"dataset {self.entry.name!r} ({self.entry.annotation_path}): "
                                "no usable rows")
        logger.info(f"dataset {self.entry.name!r}: {len(loaded.rows)} rows from "
                    f"{self.entry.annotation_path}")
        dataset = HfDataset.from_list(loaded.rows)
        dataset = dataset_meta.preprocess_func(
            dataset,
            num_proc=self.num_proc,
            load_from_cache_file=self.load_from_cache_file,
            strict=self.strict,
            enable_auto_mapping=not self.disable_auto_column_mapping,
        )
        if self.remove_unused_columns:
            dataset = RowPreprocessor.remove_useless_columns(dataset)
        apply_percent(dataset_syntax, dataset)
        return dataset


def register(registry_files: list[str] | None = None) -> dict[str, DatasetEntry]:
    """Register every registry dataset with ms-swift; safe to call more than once.

    ``registry_files`` defaults to the settings' files (``SVP_DATASET_REGISTRY`` or
    ``./datasets.yaml``). Returns the entries registered.
    """
    swift_trainer.register()
    _patch_dataset_syntax()
    config = settings.load()  # parsed, validated and logged at start-up
    paths = registry_files if registry_files is not None else config.registry_files()
    entries = load_registry(paths) if paths else {}
    _registry_files[:] = [str(p) for p in paths]
    for name, entry in entries.items():
        register_dataset(
            DatasetMeta(
                dataset_name=name,
                dataset_path=str(entry.annotation_path),
                loader=functools.partial(RegistryDatasetLoader, entry=entry),
                help=f"registry {entry.registry_file}",
            ),
            exist_ok=True,
        )
    if entries:
        logger.info(f"dataset registry: {len(entries)} datasets from "
                    f"{', '.join(str(p) for p in paths)}: {', '.join(entries)}")
    return entries
