"""Entry: the dataset registry (``name%50`` sampling, LLaVA validation).
``SVP_DATASET_REGISTRY=reg.yaml swift sft --external_plugins plugins/dataset_registry.py
--dataset name%50 other%200 ...``. Code: svp/dataset_registry; README "Dataset registry"."""

from svp.dataset_registry.swift_plugin import register

register()
