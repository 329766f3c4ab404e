"""Assemble ``report.md`` from the demo's stage records: commands, wall times, curves, results.

Kept apart from ``demo.py`` so the report can be rebuilt from any finished run
(``python data_tools/demo.py --out demo_out --stage report``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def loss_curve_png(logging_jsonl: Path, out_png: Path, title: str) -> bool:
    """Plot training loss per step from ms-swift's logging.jsonl; False when there is none."""
    if not logging_jsonl.is_file():
        return False
    steps, losses = [], []
    for line in logging_jsonl.read_text().splitlines():
        row = json.loads(line)
        if "loss" in row and "global_step/max_steps" in row:
            steps.append(int(str(row["global_step/max_steps"]).split("/")[0]))
            losses.append(float(row["loss"]))
    if not steps:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.plot(steps, losses, marker="o", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = out_png.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out_png)
    return True


def write_report(out: Path, stage_names: list[str]) -> Path:
    out = Path(out)
    records = {}
    for name in stage_names:
        p = out / "stages" / f"{name}.json"
        if p.is_file():
            records[name] = json.loads(p.read_text())
    lines = ["# swift-vlm-plugins demo report", "",
             "Everything below ran on this machine's CPU with a tiny random-weight model built "
             "offline; numbers show the plumbing works, not model quality.", "",
             "## Stages", "", "| stage | what | wall time | command(s) |", "|---|---|---|---|"]
    total = 0.0
    for name, rec in records.items():
        total += rec["wall_s"]
        cmds = "<br>".join(f"`{c}`" for c in rec["commands"]) or "-"
        lines.append(f"| {name} | {rec['title']} | {rec['wall_s']:.1f} s | {cmds} |")
    lines += ["", f"Total: {total:.0f} s.", ""]

    if "check_data" in records:
        lines += ["## Data check (`data_tools/check_data.py`)", "", "```",
                  records["check_data"]["outputs"].get("table", ""), "```", ""]
    if "sft" in records:
        logging_jsonl = Path(records["sft"]["outputs"]["logging"])
        png = out / "sft_loss.png"
        lines += ["## Training loss (`swift sft`, LoRA, `shapes%50`)", ""]
        if loss_curve_png(logging_jsonl, png, "swift sft on the tiny Qwen2.5-VL"):
            lines += [f"![training loss]({png.name})", ""]
            rows = [json.loads(x) for x in logging_jsonl.read_text().splitlines()]
            losses = [float(r["loss"]) for r in rows if "loss" in r]
            lines += [f"Loss went from {losses[0]:.3f} to {losses[-1]:.3f} over "
                      f"{len(losses)} logged steps.", ""]
        else:
            lines += ["(no loss was logged)", ""]
    if "infer" in records:
        result = Path(records["infer"]["outputs"]["result"])
        lines += ["## Predictions (`swift infer`, held-out registry dataset)", "",
                  "| image | question | truth | model |", "|---|---|---|---|"]
        for line in result.read_text().splitlines()[:8]:
            row = json.loads(line)
            img = Path(row["images"][0]["path"])
            rel = os.path.relpath(img, out)
            question = row["messages"][0]["content"].replace("<image>", "").strip()
            answer = row["response"].replace("|", "\\|").replace("\n", " ")
            lines.append(f"| ![]({rel}) | {question} | {row['labels']} | {answer} |")
        lines.append("")
    if "codec" in records:
        c = records["codec"]["outputs"]
        lines += ["## Mask codec (`data_tools/train_mask_codec.py`)", "",
                  f"Builtin 2 x 256 residual-VQ codec trained for {c['steps']} steps on "
                  f"synthetic scenes: held-out reconstruction IoU mean {c['mean_iou']}, "
                  f"median {c['median_iou']} (100 masks). The full benchmark is "
                  "`bench/bench_mask_codec.py`.", ""]
    if "mask_sft" in records:
        png = out / "mask_sft_loss.png"
        lines += ["## Mask-token SFT (`recipes/sft_qwen25vl_3b.sh` on the tiny model)", ""]
        if loss_curve_png(Path(records["mask_sft"]["outputs"]["logging"]), png,
                          "mask-token SFT (GRES conversations)"):
            lines += [f"![mask-token SFT loss]({png.name})", ""]
    if "mask_eval" in records:
        res = json.loads(Path(records["mask_eval"]["outputs"]["results"]).read_text())
        m = res["metrics"]
        lines += ["## GRES metrics (`data_tools/eval_gres.py`, synthetic val split)", "",
                  "| gIoU | cIoU | N-acc | T-acc | Pr@0.7 | Pr@0.8 | Pr@0.9 | samples |",
                  "|---|---|---|---|---|---|---|---|",
                  "| " + " | ".join("n/a" if m[k] is None else f"{m[k]:.1f}" for k in
                                   ("gIoU", "cIoU", "N-acc", "T-acc", "Pr@0.7", "Pr@0.8",
                                    "Pr@0.9")) + f" | {m['samples']} |", "",
                  "Overlays (left: both, truth green / prediction red / overlap yellow; "
                  "middle: truth; right: prediction) and the model's answers:", ""]
        ov = Path(records["mask_eval"]["outputs"]["overlays"])
        for sample in res["samples"][:6]:
            safe = sample["id"].replace(":", "_").replace("/", "_")
            png = ov / f"{safe}.png"
            if png.is_file():
                lines += [f"![{sample['id']}]({os.path.relpath(png, out)})", "",
                          f"**{sample['id']}**, IoU {sample['iou']:.2f}, the model answered:",
                          "", "```text", sample["answer"].strip()[:400], "```", ""]
    report = out / "report.md"
    tmp = out / ".report.md.tmp"
    tmp.write_text("\n".join(lines))
    tmp.replace(report)
    return report
