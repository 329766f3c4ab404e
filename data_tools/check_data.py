#!/usr/bin/env python
"""Check registry datasets before training: row counts after %X sampling, and every problem.

    python data_tools/check_data.py --registry data/datasets.yaml --dataset gres%50 dam
    SVP_DATASET_REGISTRY=data/datasets.yaml python data_tools/check_data.py --max-shown 100

Runs the same reader and validator that ``plugins/dataset_registry.py`` runs inside ``swift sft``
(without importing ms-swift): every image is decoded as training will read it
(``SVP_IMAGE_CHECK=header`` for sizes and modes only), with the pixel budget of this shell
(``MAX_PIXELS``; run it with the training environment). Exit status 0 only when every named
dataset is clean; 1 when problems were found; 2 on a usage or registry error.
"""

from __future__ import annotations

import argparse
import sys

from svp.common.settings import SettingsError
from svp.dataset_registry import settings
from svp.dataset_registry.registry import (
    Problem,
    RegistryError,
    ValidationReport,
    load_dataset_rows,
    load_registry,
    parse_spec,
    sampled_count,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--registry", nargs="+", default=None,
                    help="registry YAML file(s); default: $SVP_DATASET_REGISTRY or ./datasets.yaml")
    ap.add_argument("--dataset", nargs="+", default=None,
                    help="NAME or NAME%%X (default: every dataset in the registry)")
    ap.add_argument("--max-shown", type=int, default=20,
                    help="problems listed per dataset before the per-kind counts")
    args = ap.parse_args(argv)

    try:
        config = settings.load()
        images = config.image_checker()
        paths = args.registry or config.registry_files()
        if not paths:
            raise RegistryError("no registry: pass --registry FILE or set SVP_DATASET_REGISTRY")
        entries = load_registry(paths)
        specs = [parse_spec(s) for s in (args.dataset or list(entries))]
        unknown = [name for name, _ in specs if name not in entries]
        if unknown:
            raise RegistryError(f"unknown dataset(s) {unknown}; the registry has {sorted(entries)}")
    except (RegistryError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    total = ValidationReport()
    width = max(len(name) for name, _ in specs)
    print(f"{'dataset':<{width}}  {'rows':>8}  {'bad':>6}  {'usable':>8}  {'sample':>7}  "
          f"{'selected':>8}")
    sections = []
    for name, percent in specs:
        try:
            loaded = load_dataset_rows(entries[name], skip_bad_rows=True, images=images)
        except RegistryError as exc:
            print(f"{name:<{width}}  error: {exc}")
            total.problems.append(Problem(str(entries[name].annotation_path), "file",
                                          "malformed_row", str(exc)))
            continue
        report = loaded.report
        total.extend(report)
        usable = len(loaded.rows)
        pct = "100%" if percent is None else f"{percent:g}%"
        print(f"{name:<{width}}  {report.rows_checked:>8}  {loaded.skipped:>6}  {usable:>8}  "
              f"{pct:>7}  {sampled_count(usable, percent):>8}")
        if report.problems:
            sections.append(f"\n[{name}] {report.format(max_shown=args.max_shown)}")
    for s in sections:
        print(s)
    if total.notes:
        print("\n" + total.format_notes())
    if total.problems:
        if config.skip_bad_rows:
            print(f"\nNOT CLEAN: {total.bad_rows} bad rows; training drops and counts them "
                  "(SVP_BAD_ROWS=skip is set).")
        else:
            print(f"\nNOT CLEAN: {total.bad_rows} bad rows; training would stop "
                  "(or skip them with SVP_BAD_ROWS=skip).")
        return 1
    print(f"\nclean: {total.rows_checked} rows checked.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
