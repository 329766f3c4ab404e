"""R-GRPO recipes (dry runs) and data_tools/convert_rl.py."""

from __future__ import annotations

import json
import subprocess

import numpy as np
from PIL import Image

from data_tools import convert_rl
from tests.helpers import REPO, offline_env


def recipe(name: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "recipes" / name)], capture_output=True, text=True,
                          timeout=60, env=offline_env(**env))


def test_rgrpo_recipe_command(tmp_path):
    data = tmp_path / "rl.jsonl"
    data.write_text("{}\n")
    proc = recipe("rgrpo_qwen25vl_7b.sh", DRY_RUN="1", MODEL="m", DATA=str(data))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "swift rlhf --rlhf_type grpo --model m --model_type qwen2_5_vl" in out
    assert f"--template qwen2_5_vl_crop --external_plugins {REPO}/plugins/rgrpo.py" in out
    assert ("--reward_funcs rgrpo_accuracy rgrpo_format rgrpo_crop_valid rgrpo_region_iou "
            "rgrpo_segment_length rgrpo_tool --reward_weights 1 0.5 0.25 0.5 1 0.5") in out
    assert "--multi_turn_scheduler crop_tool --max_turns 5" in out
    assert "--learning_rate 1e-6" in out and "--beta 0.0" in out and "--use_vllm false" in out
    assert "--lr_scheduler_type constant" in out


def test_rgrpo_recipe_vllm_modes(tmp_path):
    data = tmp_path / "rl.jsonl"
    data.write_text("{}\n")
    colo = recipe("rgrpo.sh", DRY_RUN="1", MODEL="m", DATA=str(data), USE_VLLM="colocate",
                  MAX_TURNS="4")
    assert colo.returncode == 0, colo.stderr
    assert "--vllm_mode colocate" in colo.stdout and '{"image": 4}' in colo.stdout
    server = recipe("rgrpo.sh", DRY_RUN="1", MODEL="m", DATA=str(data), USE_VLLM="server")
    assert server.returncode == 0, server.stderr
    assert "swift rollout --model m" in server.stdout and "--multi_turn_scheduler crop_tool" in (
        server.stdout)
    assert "--vllm_server_pass_dataset true" in server.stdout


def test_rgrpo_recipe_fails_fast(tmp_path):
    data = tmp_path / "rl.jsonl"
    data.write_text("{}\n")
    bad = [({"REWARD_WEIGHTS": "1 1"}, "REWARD_WEIGHTS"),
           ({"NUM_GENERATIONS": "3"}, "not divisible by NUM_GENERATIONS=3"),
           ({"TEMPLATE": "qwen2_5_vl"}, "needs qwen2_5_vl_crop"),
           ({"USE_VLLM": "maybe"}, "USE_VLLM=maybe"),
           ({"DATA": str(tmp_path / "none.jsonl")}, "data file not found")]
    for env, message in bad:
        proc = recipe("rgrpo.sh", **{"DRY_RUN": "1", "MODEL": "m", "DATA": str(data), **env})
        assert proc.returncode == 2 and message in proc.stderr, (env, proc.stderr)


def test_vlmr3_chain_dry_run_passes_stage_knobs(tmp_path):
    sft, rl = tmp_path / "sft.jsonl", tmp_path / "rl.jsonl"
    sft.write_text("{}\n")
    rl.write_text("{}\n")
    proc = recipe("vlmr3_qwen25vl_7b.sh", DRY_RUN="1", SFT_DATA=str(sft), RL_DATA=str(rl),
                  WORK_DIR=str(tmp_path / "w"), SFT_LR="3e-5", RL_LR="2e-7", LR="9",
                  RL_NUM_GENERATIONS="4")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    sft_cmd = next(x for x in lines if "swift sft" in x)
    merge_cmd = next(x for x in lines if "swift export" in x)
    rl_cmd = next(x for x in lines if "swift rlhf" in x)
    assert "--learning_rate 3e-5" in sft_cmd and "--tuner_type lora" in sft_cmd
    assert "--merge_lora true" in merge_cmd and f"--output_dir {tmp_path}/w/sft_merged" in merge_cmd
    assert "--learning_rate 2e-7" in rl_cmd and "--num_generations 4" in rl_cmd
    assert f"--model {tmp_path}/w/sft_merged" in rl_cmd  # GRPO starts from the merged SFT model
    assert "--learning_rate 9" not in proc.stdout  # a bare knob never leaks into a stage


def test_convert_rl(tmp_path, capsys):
    Image.fromarray(np.zeros((480, 640, 3), np.uint8)).save(tmp_path / "a.png")
    rows = [{"image_path": "a.png", "question": "What?", "answer": "cat", "bbox": [1, 2, 30, 40],
             "source": "textvqa"},
            {"image": "a.png", "question": "How many?", "solution": 3,
             "gt_boxes": [[0, 0, 10, 10], [600, 10, 700, 50], [50, 10, 20, 5], "x"]},
            {"image_path": "a.png", "question": "Which?", "answer": ["B", "b"]},
            {"image_path": "gone.png", "question": "q", "answer": "a"},
            {"image_path": "a.png", "question": " ", "answer": "a"}]
    src = tmp_path / "src.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{oops\n")
    out = tmp_path / "rl.jsonl"
    assert convert_rl.main(["--input", str(src), "--output", str(out),
                            "--prompt-suffix", " Think, then answer."]) == 0
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(got) == 3
    assert got[0]["messages"] == [{"role": "user", "content": "<image>What? Think, then answer."}]
    assert got[0]["images"] == [str((tmp_path / "a.png").resolve())]
    assert got[0]["gt_boxes"] == [[1, 2, 30, 40]] and got[0]["source"] == "textvqa"
    # one column type: every solution a list once any row lists several answers
    assert [g["solution"] for g in got] == [["cat"], ["3"], ["B", "b"]]
    assert got[1]["gt_boxes"] == [[0, 0, 10, 10], [600, 10, 640, 50]]  # clamped; bad dropped
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["written"] == 3 and summary["dropped_gt_box"] == 2
    assert summary["skipped_missing_image"] == 1 and summary["skipped_empty_text"] == 1
    assert summary["skipped_malformed"] == 1
    err = capsys.readouterr().err
    assert "src.jsonl:line 2: gt box [50, 10, 20, 5] dropped: swapped corners" in err
    assert "src.jsonl:line 6: skipped (malformed): invalid JSON" in err
    assert convert_rl.main(["--input", str(tmp_path / "nope"), "--output", str(out)]) == 2


def _words_bash_reads(line: str) -> list[str]:
    """The words bash makes of a printed command line (as a user pasting it gets them)."""
    proc = subprocess.run(["bash", "-c", f"set -- {line}\nprintf '%s\\n' \"$@\""],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_dry_runs_print_commands_a_shell_reads_back(tmp_path):
    """JSON values and regexes survive being pasted back: they used to be printed bare, so
    ``{"image": 4}`` became two words and the PT regex's ``|`` a pipe."""
    data = tmp_path / "rl.jsonl"
    data.write_text("{}\n")
    colo = recipe("rgrpo.sh", DRY_RUN="1", MODEL="m", DATA=str(data), USE_VLLM="colocate",
                  MAX_TURNS="4")
    line = next(x for x in colo.stdout.splitlines() if " swift rlhf " in x)
    words = _words_bash_reads(line)
    assert words[words.index("--vllm_limit_mm_per_prompt") + 1] == '{"image": 4}'
    server = recipe("rgrpo.sh", DRY_RUN="1", MODEL="m", DATA=str(data), USE_VLLM="server",
                    MAX_TURNS="3")
    line = next(x for x in server.stdout.splitlines() if "swift rollout" in x)
    words = _words_bash_reads(line.split("SVP_CROP_*): ", 1)[1])
    assert words[words.index("--vllm_limit_mm_per_prompt") + 1] == '{"image": 3}'
    model = tmp_path / "neo"
    model.mkdir()
    pt = subprocess.run(["bash", str(REPO / "recipes" / "neo_2b_pt.sh")], capture_output=True,
                        text=True, timeout=120,
                        env=offline_env(DRY_RUN="1", MODEL=str(model), DATASETS=str(data),
                                        SVP_DATASET_REGISTRY=""))
    assert pt.returncode == 0, pt.stderr
    line = next(x for x in pt.stdout.splitlines() if " swift sft " in x)
    words = _words_bash_reads(line)
    regex = words[words.index("--trainable_parameters_regex") + 1]
    assert "|" in regex and regex.startswith("^")


def test_vlmr3_chain_runs_the_stages_with_vlmr3s_settings(tmp_path):
    """The chain's GRPO stage is rgrpo_qwen25vl_7b.sh's command (VLM-R3's RL settings: batch 1,
    completion 2048, constant lr), not the generic rgrpo.sh's; its SFT stage the 7B crop SFT's."""
    sft, rl = tmp_path / "sft.jsonl", tmp_path / "rl.jsonl"
    sft.write_text("{}\n")
    rl.write_text("{}\n")
    work = tmp_path / "w"
    chain = recipe("vlmr3_qwen25vl_7b.sh", DRY_RUN="1", SFT_DATA=str(sft), RL_DATA=str(rl),
                   WORK_DIR=str(work))
    assert chain.returncode == 0, chain.stderr
    alone_rl = recipe("rgrpo_qwen25vl_7b.sh", DRY_RUN="1", MODEL=str(work / "sft_merged"),
                      DATA=str(rl), OUTPUT_DIR=str(work / "rgrpo"))
    alone_sft = recipe("sft_crop_qwen25vl_7b.sh", DRY_RUN="1", DATA=str(sft),
                       OUTPUT_DIR=str(work / "sft"))

    def line(out: str, word: str) -> str:
        return next(x for x in out.splitlines() if word in x)

    assert line(chain.stdout, "swift rlhf") == line(alone_rl.stdout, "swift rlhf")
    assert line(chain.stdout, "swift sft") == line(alone_sft.stdout, "swift sft")
    rl_cmd = line(chain.stdout, "swift rlhf")
    for flag in ("--max_completion_length 2048", "--lr_scheduler_type constant",
                 "--per_device_train_batch_size 1"):
        assert flag in rl_cmd, flag
