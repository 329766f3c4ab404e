"""plugins/rgrpo.py as ms-swift loads it, and the reward classes called the way GRPO calls
them (``reward(completions, **batched_columns)``)."""

from __future__ import annotations

import pytest

from svp.croptool.format import VISION_BLOCK
from svp.croptool.rewards import REWARD_SETS, REWARDS
from tests.helpers import REPO, load_entry

GOOD = ("<think>look <tool_call>[10, 20, 200, 180]</tool_call>" + VISION_BLOCK
        + " the left part shows it</think><answer>cat</answer>")
INFOS = {"crop_tool": {"calls": [{"box": [10, 20, 200, 180], "error": None}], "executed": 1,
                       "image_wh": [640, 480], "model_wh": [588, 448], "space": "resized",
                       "factor": 28}, "num_turns": 2}


def test_loads_twice_and_registers_everything():
    from swift.rewards import orms
    from swift.rollout import multi_turns
    from swift.template.register import TEMPLATE_MAPPING
    from swift.utils.utils import import_external_file

    import_external_file(str(REPO / "plugins" / "rgrpo.py"))
    import_external_file(str(REPO / "plugins" / "rgrpo.py"))
    load_entry("rgrpo")
    from svp.croptool import swift_rgrpo, swift_template

    swift_rgrpo.register()  # and once more through the package: idempotent
    swift_template.register()
    for name in [*REWARDS, *REWARD_SETS["vlmr3"]]:
        assert orms[name].__name__ == name  # ms-swift logs rewards/<class name>/mean
    assert multi_turns["crop_tool"].__name__ == "CropToolScheduler"
    for t in ("qwen2_5_vl_crop", "qwen3_vl_crop"):
        assert "</tool_call>" in TEMPLATE_MAPPING[t].stop_words


def _call(name, completions, **cols):
    from swift.rewards import orms

    load_entry("rgrpo")
    return orms[name](args=None)(completions, trainer_state=None, **cols)


def test_rewards_on_a_batch():
    bad = "<think>x <tool_call>[5, 5, 1, 1]</tool_call>(crop failed: swapped)</think><answer>dog"
    comps = [GOOD, bad, 17]
    bad_infos = {"crop_tool": {**INFOS["crop_tool"], "executed": 0,
                               "calls": [{"box": [5, 5, 1, 1], "error": "swapped corners"}]}}
    cols = dict(rollout_infos=[INFOS, bad_infos, None], solution=["cat", "cat", "cat"],
                gt_boxes=[[[10, 20, 210, 190]], None, [[0, 0, 5, 5]]],
                messages=[[{"role": "user", "content": "<image>What is it?"}]] * 3)
    got = {name: _call(name, comps, **cols) for name in REWARDS}
    assert got["rgrpo_accuracy"] == [1.0, 0.0, 0.0]
    assert got["rgrpo_format"] == [1.0, 0.0, 0.0]
    assert got["rgrpo_crop_valid"] == [1.0, 0.0, 0.0]
    assert got["rgrpo_region_iou"][0] > 0.8 and got["rgrpo_region_iou"][1:] == [None, 0.0]
    assert got["rgrpo_segment_length"][0] == pytest.approx(0.04)  # "look": 4 characters
    assert got["rgrpo_tool"] == [1.0, 0.0, 0.0]
    # REWARD_SET=vlmr3's own, through ms-swift's registry on the same batch
    assert _call("rgrpo_accuracy_vlmr3", comps, **cols) == [1.0, 0.0, 0.0]
    assert _call("rgrpo_format_vlmr3", comps, **cols) == [0.5, 0.0, 0.0]
    assert _call("rgrpo_regions_vlmr3", comps, **cols) == [0.5, 0.0, 0.0]
    # its accuracy reads the row's source: 'two' is '2' for textvqa only; a B/C truth
    # gives 'C' 0 (a one-letter mismatch first); ours accepts both
    src = dict(solution=["2", "2", "B/C"], source=["textvqa", "ScienceQA", "ScienceQA"],
               messages=cols["messages"])
    texts = ["<answer>two</answer>", "<answer>two</answer>", "<answer>C</answer>"]
    assert _call("rgrpo_accuracy_vlmr3", texts, **src) == [1.0, 0.0, 0.0]
    assert _call("rgrpo_accuracy", texts, **src) == [0.0, 0.0, 1.0]


def test_six_rewards_on_one_batch_score_as_each_alone():
    """The six share the cleaned text, records and accuracy within one batch (ms-swift calls
    them in turn on the same lists): scores equal the pure functions' on every row, and a
    new batch (another list, or the same list changed in place) is scored afresh."""
    from svp.croptool import rewards as R
    from svp.testing.synthetic import rollout_reward_batch

    comps, cols = rollout_reward_batch(64, seed=3)
    cols.pop("trainer_state")
    expected = {
        "rgrpo_accuracy": [R.accuracy_reward(c, s)
                           for c, s in zip(comps, cols["solution"], strict=True)],
        "rgrpo_format": [R.format_reward(c) for c in comps],
        "rgrpo_crop_valid": [R.crop_valid_reward(R.Trajectory.from_infos(i))
                             for i in cols["rollout_infos"]],
        "rgrpo_region_iou": [R.region_iou_reward(R.Trajectory.from_infos(i), g)
                             for i, g in zip(cols["rollout_infos"], cols["gt_boxes"], strict=True)],
        "rgrpo_segment_length": [R.segment_length_reward(c) for c in comps],
    }
    expected["rgrpo_tool"] = [R.tool_reward(R.Trajectory.from_infos(i), a) for i, a in
                              zip(cols["rollout_infos"], expected["rgrpo_accuracy"],
                                  strict=True)]
    got = {name: _call(name, comps, **cols) for name in REWARDS}
    assert got == expected
    # the same list, changed in place: row 0 now answers wrongly and calls no tool
    comps[0] = "<think>no idea</think><answer>nothing</answer>"
    cols["rollout_infos"][0] = {"crop_tool": {"calls": [], "executed": 0}}
    assert _call("rgrpo_format", comps, **cols)[0] == 1.0
    assert _call("rgrpo_accuracy", comps, **cols)[0] == 0.0
    assert _call("rgrpo_tool", comps, **cols)[0] == 0.0
    assert _call("rgrpo_crop_valid", comps, **cols)[0] == 0.0


def test_missing_solution_column_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a 'solution' column"):
        _call("rgrpo_accuracy", [GOOD], rollout_infos=[INFOS])


def test_judge_from_the_environment_is_shared_by_accuracy_and_tool(monkeypatch, judge_url):
    """SVP_JUDGE_URL set: free-form mismatches go to the endpoint, once per (q, gold, pred)."""
    from svp.croptool import swift_rgrpo
    from tests.helpers import JudgeHandler

    monkeypatch.setenv("SVP_JUDGE_URL", judge_url)
    monkeypatch.setattr(swift_rgrpo._AccuracyMixin, "_judge_ready", False)
    JudgeHandler.calls = 0
    text = GOOD.replace("<answer>cat</answer>", "<answer>a small kitten</answer>")
    cols = dict(rollout_infos=[INFOS, INFOS], solution=["the kitten", "the dog"])
    assert _call("rgrpo_accuracy", [text, text], **cols) == [1.0, 0.0]
    assert _call("rgrpo_tool", [text, text], **cols) == [1.0, 0.0]
    assert JudgeHandler.calls == 2  # the tool reward reused both verdicts
    monkeypatch.setattr(swift_rgrpo._AccuracyMixin, "_judge_ready", False)
    monkeypatch.delenv("SVP_JUDGE_URL")
    assert _call("rgrpo_accuracy", [text], rollout_infos=[INFOS], solution=["the kitten"]) == [0.0]


def test_readme_table_and_recipe_defaults_match_the_code(tmp_path):
    """The recipe takes its default rewards and weights from REWARDS (it states none), and
    the README's table is REWARDS."""
    import re
    import subprocess

    from tests.helpers import offline_env

    readme = (REPO / "README.md").read_text()
    recipe = (REPO / "recipes" / "rgrpo.sh").read_text()
    assert "rgrpo_accuracy" not in recipe, "the recipe restates the reward defaults"
    data = tmp_path / "rl.jsonl"
    data.write_text("{}\n")
    out = subprocess.run(["bash", str(REPO / "recipes" / "rgrpo.sh")], capture_output=True,
                         text=True, env=offline_env(DRY_RUN="1", MODEL="m", DATA=str(data)),
                         timeout=60)
    assert out.returncode == 0, out.stderr
    m = re.search(r"--reward_funcs (.*?) --reward_weights (.*?) --", out.stdout)
    names, weights = m.group(1).split(), m.group(2).split()
    assert names == list(REWARDS)
    for name, w in zip(names, weights, strict=True):
        rng, default, formula = REWARDS[name]
        assert float(w) == default
        assert f"| `{name}` | {rng} | {default:g} | {formula} |" in readme
    # REWARD_SET=vlmr3: VLM-R3's four at weight 1, the two of its own tabled too
    up = subprocess.run(["bash", str(REPO / "recipes" / "rgrpo.sh")], capture_output=True,
                        text=True, env=offline_env(DRY_RUN="1", MODEL="m", DATA=str(data),
                                                   REWARD_SET="vlmr3"), timeout=60)
    m = re.search(r"--reward_funcs (.*?) --reward_weights (.*?) --", up.stdout)
    assert m.group(1).split() == list(REWARD_SETS["vlmr3"]) and set(m.group(2).split()) == {"1"}
    for name, (rng, w, formula) in REWARD_SETS["vlmr3"].items():
        if name not in REWARDS:
            assert f"| `{name}` | {rng} | {w:g} | {formula} |" in readme
