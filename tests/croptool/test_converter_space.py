"""The converter writes boxes in exactly the space the training template sees, for any image
size, ``--main-short`` and ``MAX_PIXELS``: run in the training environment, the crops it cuts
(``--crops-dir``) and the crops the crop template cuts on the fly from its box text are the
same pixels, and the box text maps back to the annotated pixels.

Each environment runs in its own process: ms-swift fixes the processor's pixel bounds once
per process, from ``MAX_PIXELS``, when it loads the processor (as in training).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO, offline_env

SIZES = [(4000, 3000), (3000, 4000), (8000, 1000)]
BOXES = [(0.10, 0.15, 0.45, 0.60), (0.50, 0.05, 0.97, 0.95)]  # fractions of the image
ENVS = [{"MAX_PIXELS": "1003520"}, {"MAX_PIXELS": "200704"}, {}]


def write_source(folder) -> None:
    """Annotated images (boxes in original pixels, VLM-R3 ``QnA``/``A3`` rows)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i, (w, h) in enumerate(SIZES):
        small = rng.integers(0, 255, (h // 50, w // 50, 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.BILINEAR).save(folder / f"im{i}.jpg",
                                                                   quality=90)
        calls = " ".join(f"{{Crop part [{bx[0] * w:.1f}, {bx[1] * h:.1f}, {bx[2] * w:.1f}, "
                         f"{bx[3] * h:.1f}]}}" for bx in BOXES)
        rows.append({"image_path": f"im{i}.jpg", "QnA": [
            {"Q": "What is it?", "A3": f"<think>{calls}</think><answer>x</answer>"}]})
    (folder / "src.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def check_in_this_process(folder: str, model_dir: str) -> dict:
    """Convert (with and without pre-cut crops) and encode both, in this environment."""
    import os
    from pathlib import Path

    import torch
    from swift.model import get_model_processor
    from swift.template import get_template
    from swift.utils.utils import import_external_file

    from data_tools import convert_vlmr3
    from svp.croptool import settings
    from svp.croptool.geometry import parse_tool_calls

    import_external_file(str(REPO / "plugins" / "croptool.py"))
    _, processor = get_model_processor(model_dir, model_type="qwen2_5_vl", load_model=False)
    root = Path(folder)
    report = {}
    for main_short in ("0", "448"):
        # one environment for the converter and the template, as the recipes export it
        os.environ["SVP_CROP_MAIN_SHORT"] = main_short
        out = root / f"ms{main_short}"
        common = ["--input", str(root / "src.jsonl"), "--family", "qwen2_5_vl"]
        assert convert_vlmr3.main([*common, "--output", str(out / "fly.jsonl")]) == 0
        assert convert_vlmr3.main([*common, "--output", str(out / "pre.jsonl"),
                                   "--crops-dir", str(out / "crops")]) == 0
        fly = [json.loads(x) for x in (out / "fly.jsonl").read_text().splitlines()]
        pre = [json.loads(x) for x in (out / "pre.jsonl").read_text().splitlines()]
        crop_t = get_template(processor, template_type="qwen2_5_vl_crop")
        stock_t = get_template(processor, template_type="qwen2_5_vl")
        policy = settings.load().policy("qwen2_5_vl")
        for (w, h), f_row, p_row in zip(SIZES, fly, pre, strict=True):
            a, b = crop_t.encode(f_row), stock_t.encode(p_row)
            grids_a, grids_b = a["image_grid_thw"].tolist(), b["image_grid_thw"].tolist()
            # the crops (images 2 and 3): same grid, same pixels; patches are rows of
            # pixel_values in image order
            n_main_a = int(torch.tensor(grids_a[0]).prod())
            n_main_b = int(torch.tensor(grids_b[0]).prod())
            same = (grids_a[1:] == grids_b[1:] and torch.equal(
                a["pixel_values"][n_main_a:], b["pixel_values"][n_main_b:]))
            boxes = [c.box for c in parse_tool_calls(f_row["messages"][1]["content"])]
            back = [policy.box_to_pixels(bx, (w, h)) for bx in boxes]
            err = max(abs(v - f * s) for bk, fr in zip(back, BOXES, strict=True)
                      for v, f, s in zip(bk, fr, (w, h, w, h), strict=True))
            scale = max(w, h) / max(policy.main_size(w, h))
            report[f"{w}x{h} main_short={main_short}"] = {
                "crops_equal": bool(same), "crop_grids": grids_a[1:],
                "main_grid": grids_a[0], "box_error_px": err, "px_per_model_unit": scale}
    return report


@pytest.mark.slow
@pytest.mark.parametrize("env", ENVS, ids=lambda e: e.get("MAX_PIXELS", "unset"))
def test_converter_boxes_are_the_templates_crops(env, tiny_model, tmp_path):
    write_source(tmp_path)
    code = ("import json, sys; from tests.croptool.test_converter_space import "
            "check_in_this_process as c; print('REPORT' + json.dumps(c(sys.argv[1], "
            "sys.argv[2])))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path),
                           str(tiny_model("qwen2_5_vl"))], cwd=REPO, capture_output=True,
                          text=True, env=offline_env(**env), timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("REPORT"))
    report = json.loads(line[len("REPORT"):])
    for case, r in report.items():
        assert r["crops_equal"], (env, case, r)
        # integer box text: at most half a model unit of rounding per coordinate
        assert r["box_error_px"] <= 0.5 * r["px_per_model_unit"] + 1e-6, (env, case, r)
