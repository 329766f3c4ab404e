"""Assemble ``report.md`` from the demo's stage records: commands, wall times, curves, results.

Kept apart from ``demo.py`` so the report can be rebuilt from any finished run
(``python data_tools/demo.py --out demo_out --stage report``). Every figure is read from
what the stages wrote (ms-swift's ``logging.jsonl``, the tools' JSON outputs); nothing here
runs a model.
"""

from __future__ import annotations

import json
import os
from itertools import groupby
from pathlib import Path

from svp.common.io import atomic_path, write_atomic
from svp.common.run_log import step_rows
from svp.covt.tokens import STAGES as COVT_STAGES


def curves_png(series: dict[str, tuple[list[int], list[float]]], out_png: Path, title: str,
               ylabel: str, bands: list[tuple[int, int, str]] | None = None) -> bool:
    """One line per series (``name -> (steps, values)``), optional shaded step ranges
    (``(first, last, label)``, e.g. CoVT stages); False when there is nothing to plot."""
    series = {k: v for k, v in series.items() if v[0]}
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    for k, (first, last, label) in enumerate(bands or []):
        ax.axvspan(first - 0.5, last + 0.5, color=f"C{k + 5}", alpha=0.12, lw=0)
        ax.text((first + last) / 2, 1.0, label, transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=8)
    for name, (steps, values) in series.items():
        ax.plot(steps, values, marker="o", markersize=3, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10, pad=14 if bands else 6)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return True


def _rel(path: str | Path, out: Path) -> str:
    return os.path.relpath(path, out)


def _cell(text: str, limit: int = 160, code: bool = False) -> str:
    """One table cell: a single line, shortened; ``code`` puts it in a code span (where
    ``<`` needs no escaping, and ``` fences of the model's answer are dropped)."""
    text = " ".join(str(text).split())
    if code:
        text = text.replace("```json", "").replace("```", "").strip()
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    text = text.replace("|", "\\|")
    if code:
        return f"`{text}`" if text else "(empty)"
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _fence(text: str) -> list[str]:
    """A code block that survives answers containing ``` themselves."""
    return ["~~~text", text.strip(), "~~~"]


def _loss_section(lines: list[str], out: Path, rec: dict, png_name: str, heading: str,
                  title: str) -> None:
    rows = [r for r in step_rows(rec["outputs"]["logging"]) if "loss" in r]
    losses = [float(r["loss"]) for r in rows]
    lines += [heading, ""]
    if curves_png({"loss": ([r["step"] for r in rows], losses)}, out / png_name, title,
                  "training loss"):
        lines += [f"![{title}]({png_name})", "",
                  f"Loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} logged steps.",
                  ""]
    else:
        lines += ["(no loss was logged)", ""]


def _stages_table(lines: list[str], records: dict[str, dict], out: Path) -> None:
    lines += ["## Stages", "",
              "Each stage can be rerun alone: `python data_tools/demo.py --out "
              f"{out.name} --stage NAME` (it reads the earlier stages' records in "
              "`stages/`). Paths below are relative to the output folder; full logs are in "
              "`logs/`.", "",
              "| stage | what | wall time | command(s) |", "|---|---|---|---|"]
    total = 0.0
    for name, rec in records.items():
        total += rec["wall_s"]
        cmds = "<br>".join(f"`{c}`".replace("|", "\\|") for c in rec["commands"]) or "-"
        notes = "".join(f"<br>*{n}*" for n in rec.get("notes", []))
        lines.append(f"| {name} | {rec['title']}{notes} | {rec['wall_s']:.1f} s | {cmds} |")
    lines += ["", f"Total: {total:.0f} s ({total / 60:.1f} min).", ""]


def _registry(lines: list[str], records: dict, out: Path) -> None:
    lines += ["## 1. Dataset registry", ""]
    if "check_data" in records:
        lines += ["`data_tools/check_data.py` on the registry:", "", "```",
                  records["check_data"]["outputs"].get("table", ""), "```", ""]
    if "sft" in records:
        _loss_section(lines, out, records["sft"], "sft_loss.png",
                      "### `swift sft` (LoRA) on `shapes%50`", "swift sft on shapes%50")
    if "infer" in records:
        result = Path(records["infer"]["outputs"]["result"])
        lines += ["### `swift infer` on the held-out registry dataset", "",
                  "| image | question | truth | model |", "|---|---|---|---|"]
        for line in result.read_text().splitlines()[:8]:
            row = json.loads(line)
            question = row["messages"][0]["content"].replace("<image>", "")
            lines.append(f"| ![]({_rel(row['images'][0]['path'], out)}) | {_cell(question)} | "
                         f"{_cell(row['labels'])} | {_cell(row['response'])} |")
        lines.append("")


def _mask_tokens(lines: list[str], records: dict, out: Path) -> None:
    if not {"codec", "mask_sft", "mask_eval"} & set(records):
        return
    lines += ["## 2. Mask tokens", ""]
    if "codec" in records:
        c = records["codec"]["outputs"]
        lines += ["### Mask codec (`data_tools/train_mask_codec.py`)", "",
                  f"Builtin 2 x 256 residual-VQ codec trained for {c['steps']} steps on "
                  f"synthetic scenes: held-out reconstruction IoU mean {c['mean_iou']}, "
                  f"median {c['median_iou']} (100 masks). The full benchmark is "
                  "`bench/bench_mask_codec.py`.", ""]
    if "mask_sft" in records:
        _loss_section(lines, out, records["mask_sft"], "mask_sft_loss.png",
                      "### Mask-token SFT (`recipes/sft_qwen25vl_3b.sh`)",
                      "mask-token SFT (GRES conversations)")
    if "mask_eval" in records:
        outs = records["mask_eval"]["outputs"]
        res = json.loads(Path(outs["results"]).read_text())
        keys = ("gIoU", "cIoU", "N-acc", "T-acc", "Pr@0.7", "Pr@0.8", "Pr@0.9")
        lines += ["### GRES metrics (`data_tools/eval_gres.py`, synthetic val split)", "",
                  "| protocol | " + " | ".join(keys) + " | samples |",
                  "|---" * (len(keys) + 2) + "|"]
        runs = [("ours (`--protocol tokens`, constrained decoding)", res)]
        if outs.get("results_samtok") and Path(outs["results_samtok"]).is_file():
            runs.append(("SAMTok (`--protocol samtok`, unconstrained)",
                         json.loads(Path(outs["results_samtok"]).read_text())))
        for label, r in runs:
            m = r["metrics"]
            lines.append(f"| {label} | " + " | ".join(
                "n/a" if m[k] is None else f"{m[k]:.1f}" for k in keys) + f" | {m['samples']} |")
        lines.append("")
        vis = records.get("visualize", {}).get("outputs", {})
        if vis.get("masks") and Path(vis["masks"]).is_file():
            lines += ["Ground truth vs decoded mask tokens (`data_tools/visualize.py masks`; "
                      "left: both, truth green / prediction red / overlap yellow; middle: "
                      "truth; right: prediction):", "",
                      f"![mask overlays]({_rel(vis['masks'], out)})", ""]
        lines += ["What the model generated for the first samples (constrained decoding):", "",
                  "| sample | IoU | answer |", "|---|---|---|"]
        for s in res["samples"][:6]:
            iou = "no target" if s.get("no_target") else f"{s['iou']:.2f}"
            lines.append(f"| {s['id']} | {iou} | {_cell(s['answer'], 200, code=True)} |")
        lines.append("")


def _crop_tool(lines: list[str], records: dict, out: Path) -> None:
    if not {"crop_sft", "crop_infer", "rgrpo"} & set(records):
        return
    lines += ["## 3. Crop-tool reasoning and Regional GRPO", ""]
    if "crop_data" in records:
        lines += ["A training answer after `data_tools/convert_vlmr3.py` (box in the model's "
                  "coordinate space; the crop template inserts the crop after "
                  "`</tool_call>`):", "", *_fence(records["crop_data"]["outputs"]["example"]),
                  ""]
    if "crop_sft" in records:
        _loss_section(lines, out, records["crop_sft"], "crop_sft_loss.png",
                      "### Crop-tool SFT (`recipes/vlmr3_qwen25vl_7b.sh`, stages sft + merge)",
                      "crop-tool SFT")
    if "crop_infer" in records:
        results = json.loads(Path(records["crop_infer"]["outputs"]["results"]).read_text())
        results = results if isinstance(results, list) else [results]
        lines += ["### Inference that executes the crops (`data_tools/crop_infer.py`)", "",
                  "| sample | crops executed | invalid calls | rounds | answer |",
                  "|---|---|---|---|---|"]
        for i, r in enumerate(results):
            lines.append(f"| {i} | {len(r['tool_calls'])} | {len(r['invalid_calls'])} | "
                         f"{r['rounds']} | {_cell(r['answer'] or '', code=True)} |")
        lines.append("")
        vis = records.get("visualize", {}).get("outputs", {})
        if vis.get("crops") and Path(vis["crops"]).is_file():
            lines += ["Crop chains (`data_tools/visualize.py crops`): the boxes the model asked "
                      "for on the picture (true box thin green), then the crops it was given, "
                      "in order, and its text:", "", f"![crop chains]({_rel(vis['crops'], out)})",
                      ""]
    if "rgrpo" in records:
        _rgrpo(lines, records["rgrpo"], out)


def _rgrpo(lines: list[str], rec: dict, out: Path) -> None:
    rows = [r for r in step_rows(rec["outputs"]["logging"]) if "reward" in r]
    lines += ["### Regional GRPO (`recipes/vlmr3_qwen25vl_7b.sh`, stage grpo)", ""]
    if not rows:
        lines += ["(no reward was logged)", ""]
        return
    names = sorted({k.split("/")[1] for r in rows for k in r
                    if k.startswith("rewards/") and k.endswith("/mean")})
    steps = [r["step"] for r in rows]
    series = {n: (steps, [float(r[f"rewards/{n}/mean"]) for r in rows]) for n in names}
    series["reward (weighted sum)"] = (steps, [float(r["reward"]) for r in rows])
    if curves_png(series, out / "rgrpo_rewards.png", "R-GRPO rewards (mean over rollouts)",
                  "reward"):
        lines += ["![R-GRPO rewards](rgrpo_rewards.png)", ""]
    lines += ["| step | " + " | ".join(names) + " | weighted sum | completion length |",
              "|---" * (len(names) + 3) + "|"]
    for r in rows:
        lines.append(f"| {r['step']} | " + " | ".join(
            f"{float(r[f'rewards/{n}/mean']):.3f}" for n in names)
            + f" | {float(r['reward']):.3f} | "
              f"{float(r.get('completions/mean_length', 0)):.1f} |")
    lines.append("")
    comp = Path(rec["outputs"]["completions"])
    if comp.is_file():
        first = json.loads(comp.read_text().splitlines()[0])
        lines += ["Rollouts of the first step (`completions.jsonl`): each executed crop is the "
                  "vision block right after `</tool_call>`; malformed calls get a "
                  "`(crop failed: ...)` note and the model goes on:", "",
                  "| completion | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for k, text in enumerate(first["completion"]):
            vals = []
            for n in names:
                v = first.get(n, [None] * (k + 1))[k]
                vals.append("-" if v is None else f"{float(v):.2f}")
            lines.append(f"| {_cell(text, 260, code=True)} | " + " | ".join(vals) + " |")
        lines.append("")


def _covt(lines: list[str], records: dict, out: Path) -> None:
    if "covt" not in records:
        return
    lines += ["## 4. Visual-expert auxiliary losses (CoVT)", ""]
    rows = [r for r in step_rows(records["covt"]["outputs"]["logging"]) if "covt_aux" in r]
    if rows:
        steps = [r["step"] for r in rows]
        names = sorted(k for k in rows[0] if k.startswith("covt_")
                       and k not in ("covt_stage", "covt_cached"))
        bands = []  # (first step, last step, stage) of each run of equal logged stages
        for stage, run in groupby(rows, key=lambda r: int(float(r["covt_stage"]))):
            run = list(run)
            bands.append((run[0]["step"], run[-1]["step"], COVT_STAGES[stage]))
        series = {n: (steps, [float(r[n]) for r in rows]) for n in names}
        series["LM + aux loss"] = (steps, [float(r["loss"]) for r in rows])
        if curves_png(series, out / "covt_losses.png", "CoVT losses per step (stand-in experts)",
                      "loss", bands):
            lines += ["![CoVT losses](covt_losses.png)", ""]
        first, last = rows[0], rows[-1]
        lines += ["| | " + " | ".join(names) + " | loss | stage |", "|---" * (len(names) + 3) + "|"]
        for label, r in (("first step", first), ("last step", last)):
            lines.append(f"| {label} ({r['step']}) | " + " | ".join(
                f"{float(r[n]):.3f}" for n in names) + f" | {float(r['loss']):.3f} | "
                f"{COVT_STAGES[int(float(r['covt_stage']))]} |")
        lines += ["", "The stage follows the global step (`SVP_COVT_SCHEDULE`); `covt_aux` is "
                  "the weighted sum added to the LM loss.", ""]
    if "covt_decode" in records:
        dec = json.loads(Path(records["covt_decode"]["outputs"]["decoded"]).read_text())
        lines += ["### Decoded visual thoughts (`data_tools/covt_decode.py`)", "",
                  "The merged model read a reasoning-stage answer; the hidden states at each "
                  "expert's tokens went through the trained heads and the expert's frozen "
                  "decoder. A map only says something about the tokens where its loss is below "
                  "the zero-token loss (the decoder given no information from the model).", "",
                  "| expert | loss vs expert | zero-token loss |", "|---|---|---|"]
        for name, e in dec["experts"].items():
            lines.append(f"| {name} | {e['loss']:.3f} | {e['zero_token_loss']:.3f} |")
        lines.append("")
        vis = records.get("visualize", {}).get("outputs", {})
        if vis.get("thoughts") and Path(vis["thoughts"]).is_file():
            lines += [f"![decoded visual thoughts]({_rel(vis['thoughts'], out)})", ""]


def _neo(lines: list[str], records: dict, out: Path) -> None:
    if "neo" not in records:
        return
    rec = records["neo"]["outputs"]
    series = {}
    for name in ("pt", "sft"):
        rows = [r for r in step_rows(rec[f"{name}_logging"]) if "loss" in r]
        series[name.upper()] = ([r["step"] for r in rows], [float(r["loss"]) for r in rows])
    lines += ["## NEO, the native VLM", "",
              "A tiny random Qwen3 (2 layers) turned into NEO with 2 pre-buffer layers by "
              "`data_tools/build_neo.py`; PT trains the pre-buffer, the H/W channels and the "
              "patch embedding, SFT trains everything; NEO's own weighted loss (`square`).", ""]
    if curves_png(series, out / "neo_losses.png", "NEO training loss (PT, then SFT)",
                  "training loss"):
        lines += ["![NEO losses](neo_losses.png)", ""]
        for name, (_, vals) in series.items():
            if vals:
                lines.append(f"- {name}: {vals[0]:.3f} -> {vals[-1]:.3f} over {len(vals)} "
                             "logged steps")
        lines.append("")
    results = [json.loads(x) for x in Path(rec["result"]).read_text().splitlines()]
    lines += ["| question | image | answer (swift infer, batched) |", "|---|---|---|"]
    for r in results:
        q = r["messages"][0]["content"]
        lines.append(f"| {_cell(q, 60)} | {'yes' if r.get('images') else 'no'} | "
                     f"{_cell(r['response'], 80, code=True)} |")
    lines.append("")


def write_report(out: Path, stage_names: list[str]) -> Path:
    out = Path(out)
    records = {}
    for name in stage_names:
        p = out / "stages" / f"{name}.json"
        if p.is_file():
            records[name] = json.loads(p.read_text())
    lines = ["# swift-vlm-plugins demo report", "",
             "Everything below ran on this machine's CPU with a tiny random-weight Qwen2.5-VL "
             "built offline, stand-in visual experts and synthetic data: the numbers show "
             "that each capability runs end to end through the same recipes and tools used "
             "on GPUs, not model quality.", ""]
    _stages_table(lines, records, out)
    _registry(lines, records, out)
    _mask_tokens(lines, records, out)
    _crop_tool(lines, records, out)
    _covt(lines, records, out)
    _neo(lines, records, out)
    report = out / "report.md"
    write_atomic(report, "\n".join(lines))
    return report


def export_report(out: Path, dest: Path) -> Path:
    """Copy ``report.md`` and every local picture it shows into ``dest`` (same relative
    paths), so a finished demo can be published, e.g. as the README's example report."""
    import re
    import shutil

    out, dest = Path(out), Path(dest)
    text = (out / "report.md").read_text()
    links = sorted(set(re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)))
    missing = [ln for ln in links if not (out / ln).is_file()]
    if missing:
        raise SystemExit(f"{out / 'report.md'} shows pictures that are not there: {missing[:5]}")
    outside = [ln for ln in links if ln.startswith("..") or Path(ln).is_absolute()]
    if outside:
        raise SystemExit(f"pictures outside {out} cannot be exported: {outside[:5]}")
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for ln in links:
        (tmp / ln).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(out / ln, tmp / ln)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "report.md").write_text(text)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.replace(dest)
    return dest / "report.md"
