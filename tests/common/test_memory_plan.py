"""Memory plans on the real architectures (meta device): parameter counts against the
published totals, model states against DeepSpeed's own estimators, every recipe's defaults
fitting 8 x 80 GB, and each recipe printing the plan of its defaults."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from data_tools.plan_memory import RECIPES, recipe_plan
from svp.common.memory_plan import (
    GB,
    RunShape,
    count,
    deepspeed_model_states_gb,
    format_plan,
    plan,
)
from tests.helpers import REPO, offline_env

# published totals (model cards), billions of parameters
PUBLISHED = {"qwen2_5_vl_3b": 3.75, "qwen2_5_vl_7b": 8.29, "qwen3_vl_4b": 4.44,
             "qwen3_vl_8b": 8.77,
             # NEO: no model card figure; derived from the configuration fields
             "neo_2b": 2.59, "neo_9b": 10.25}


@pytest.mark.parametrize("arch", sorted(PUBLISHED))
def test_parameter_counts_are_the_published_ones(arch):
    assert round(count(arch, cache_dir=None).total / 1e9, 2) == PUBLISHED[arch]


def test_neo_pt_trains_its_explicit_set():
    """NEO-2B's PT set counted by hand from its shapes: 12 whole pre-buffer layers, the H/W
    tensors of the 28 LLM layers and the patch embedding (derived from the configuration: 0.68 B,
    0.25 B over all 40 layers, 9.2 M)."""
    e, q, kv, d, inter = 2048, 16 * 128, 8 * 128, 128, 6144
    hw = e * q + e * kv + 4 * (d // 2)
    layer = 2 * e * q + 3 * e * kv + q * e + 3 * e * inter + 2 * e + 2 * d + 4 * (d // 2)
    vision = (3 * 16 * 16 * 1024 + 1024) + (1024 * 4 * e + e)
    c = count("neo_2b", cache_dir=None)
    assert c.vision == vision and round(vision / 1e6, 1) == 9.2
    assert c.partial_trainable == 12 * layer + 28 * hw + vision
    assert round(12 * layer / 1e9, 2) == 0.68 and round(40 * hw / 1e9, 2) == 0.25
    p = plan(RunShape("neo_2b", tuner="full", zero=2, partial="PT set", freeze_vit=False))
    assert p.trainable == c.partial_trainable
    with pytest.raises(ValueError, match="defines no partial trainable set"):
        plan(RunShape("qwen2_5_vl_3b", tuner="full", partial="PT set"))


def test_counts_are_kept_per_config_and_rebuilt_when_it_changes(tmp_path, tiny_model):
    """The on-disk counts are the meta build's; a different config (or transformers version)
    is a different key, and an unreadable entry is rebuilt, never trusted."""
    from svp.common.memory_plan import count_on_meta, counts_key

    folder = tmp_path / "model"
    folder.mkdir()
    config = json.loads((tiny_model("qwen2_5_vl") / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config))
    cache = tmp_path / "cache"
    first = count(str(folder), cache)
    assert first == count_on_meta(str(folder))
    stored = cache / f"{counts_key(str(folder))}.json"
    assert json.loads(stored.read_text())["total"] == first.total
    count.cache_clear()
    stored.write_text(json.dumps({**json.loads(stored.read_text()), "total": 1}))
    assert count(str(folder), cache).total == 1  # read back, not rebuilt
    count.cache_clear()
    stored.write_text("{broken")
    assert count(str(folder), cache) == first
    config["text_config"]["intermediate_size"] *= 2
    (folder / "config.json").write_text(json.dumps(config))
    count.cache_clear()
    assert count(str(folder), cache).language > first.language  # wider MLPs: counted anew
    assert len(list(cache.glob("*.json"))) == 2


@pytest.mark.parametrize("zero", [2, 3])
@pytest.mark.parametrize("arch", ["qwen2_5_vl_7b", "qwen3_vl_8b"])
def test_full_tuning_model_states_match_deepspeeds_estimators(arch, zero):
    """Everything trainable: weights + gradients + optimizer = DeepSpeed's estimate, and the
    formula of deepspeed_model_states_gb is DeepSpeed's own (its estimator, called)."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    c = count(arch)
    shape = RunShape(arch, tuner="full", zero=zero, gpus=8, freeze_vit=False,
                     freeze_aligner=False)
    p = plan(shape)
    states = p.parts["weights"] + p.parts["gradients"] + p.parts["optimizer"]
    ours = deepspeed_model_states_gb(c.total, c.largest_layer, 8, zero)
    assert states == pytest.approx(ours, rel=1e-9)
    if zero == 2:
        _, gpu = estimate_zero2_model_states_mem_needs(c.total, num_gpus_per_node=8,
                                                       cpu_offload=False)
    else:
        _, gpu, _ = estimate_zero3_model_states_mem_needs(c.total, c.largest_layer,
                                                          num_gpus_per_node=8,
                                                          cpu_offload=False,
                                                          cpu_offload_params=False)
    assert states == pytest.approx(gpu / GB, rel=1e-6)


def test_lora_trains_the_linears_and_the_saved_copies():
    c = count("qwen2_5_vl_7b")
    p = plan(RunShape("qwen2_5_vl_7b", lora_rank=8, modules_to_save=("embed_tokens",)))
    assert p.trainable == 8 * c.lora_per_rank + c.embed
    # rank x (in + out) over 28 layers x 7 linears: q k v o gate up down
    per_layer = (3584 + 3584) + 2 * (3584 + 512) + (3584 + 3584) + 2 * (3584 + 18944) + (
        18944 + 3584)
    assert c.lora_per_rank == 28 * per_layer


def test_gradient_checkpointing_and_zero3_cut_memory():
    base = RunShape("qwen2_5_vl_7b", tuner="full", seq_len=8192)
    off = plan(RunShape(**{**base.__dict__, "grad_ckpt": False}))
    on = plan(base)
    assert off.parts["activations"] > 10 * on.parts["activations"]
    assert not on.fits  # full 7B on plain DDP: weights, gradients + buckets, AdamW states
    assert plan(RunShape(**{**base.__dict__, "zero": 3})).fits


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_default_fits_8_x_80gb(name):
    p = recipe_plan(name)
    assert (p.shape.gpus, p.shape.gpu_mem_gb) == (8, 80.0)
    assert p.fits, format_plan(p)


def test_cli_all_recipes_and_exit_status():
    out = subprocess.run([sys.executable, str(REPO / "data_tools" / "plan_memory.py"), "--all"],
                         capture_output=True, text=True, timeout=300, env=offline_env())
    assert out.returncode == 0, out.stderr
    assert len(re.findall(r"^\[\w+\] memory plan:", out.stdout, re.M)) == len(RECIPES)
    tight = subprocess.run([sys.executable, str(REPO / "data_tools" / "plan_memory.py"),
                            "--recipe", "rgrpo_qwen25vl_7b", "--zero", "0"],
                           capture_output=True, text=True, timeout=300, env=offline_env())
    assert tight.returncode == 1 and "DOES NOT FIT" in tight.stdout


WRAPPERS = {  # recipe file -> (RECIPES entry, environment its DRY_RUN needs)
    "sft_registry.sh": ("sft_registry", {"DATASETS": "x"}),
    "sft_qwen25vl_3b.sh": ("sft_qwen25vl_3b", {"DATASETS": "x"}),
    "sft_qwen3vl_4b.sh": ("sft_qwen3vl_4b", {"DATASETS": "x"}),
    "sft_crop_qwen25vl_7b.sh": ("sft_crop_qwen25vl_7b", {"DATA": "DATAFILE"}),
    "sft_crop_qwen3vl_8b.sh": ("sft_crop_qwen3vl_8b", {"DATA": "DATAFILE"}),
    "rgrpo_qwen25vl_7b.sh": ("rgrpo_qwen25vl_7b", {"DATA": "DATAFILE", "MODEL":
                                                   "Qwen/Qwen2.5-VL-7B-Instruct"}),
    "covt_qwen25vl_7b.sh": ("covt_qwen25vl_7b", {"DATA": "DATAFILE",
                                                 "SVP_COVT_BACKEND": "standin"}),
    **{f"neo_{size}_{stage}.sh": (f"neo_{size}_{stage}", {"DATASETS": "x",
                                                        "MODEL": f"neo-{size}-init"})
       for size in ("2b", "9b") for stage in ("pt", "mt", "sft")},
}


@pytest.mark.parametrize("recipe", sorted(WRAPPERS))
def test_each_recipe_prints_the_plan_of_its_defaults(recipe, tmp_path):
    """The plan a recipe prints from its own variables is the plan of RECIPES[name]: the
    defaults stated in bash and in Python agree."""
    name, env = WRAPPERS[recipe]
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    (tmp_path / "datasets.yaml").write_text("x: {annotation_path: d.jsonl}\n")
    env = {k: (str(data) if v == "DATAFILE" else v) for k, v in env.items()}
    out = subprocess.run(["bash", str(REPO / "recipes" / recipe)], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path,
                         env=offline_env(DRY_RUN="1", NPROC_PER_NODE="8", **env))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    printed = out.stdout[out.stdout.index("memory plan:"):].split("\n")
    printed = "\n".join(printed[:next(i for i, ln in enumerate(printed)
                                      if ln.strip().startswith("total per GPU")) + 1])
    assert printed == format_plan(recipe_plan(name)), recipe


def test_readme_table_is_the_planners():
    """README 'Scaling out' shows every recipe's plan; regenerate it with
    ``python data_tools/plan_memory.py --markdown`` when a default or the method changes."""
    from data_tools.plan_memory import markdown_table

    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- memory-plan -->\n(.*?)\n<!-- /memory-plan -->", readme, re.S)
    assert block and block.group(1) == markdown_table()
