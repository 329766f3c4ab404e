"""The benchmarks the four methods report, which path each takes, and the published numbers.

``path`` is how a benchmark is run against a served model:

- ``evalscope``: EvalScope's own adapter (``evalscope eval --datasets ID``), reading a local
  copy in the dataset's own columns (``--dataset-args '{ID: {"dataset_id": DIR}}'``);
- ``evalscope-custom``: EvalScope lacks it; :mod:`svp.evaluation.convert` turns the released
  files into EvalScope's ``general_vmcq`` layout, one subset per category, and EvalScope runs
  and scores it;
- ``ours``: referring segmentation with masks (:mod:`svp.evaluation.refseg`); EvalScope's
  ``refcoco`` scores boxes or captions of a drawn region, not masks.

Published numbers are for the released checkpoint of each method, labelled with where they
were read. They were measured with each paper's own harness (judge models, prompts, picture
sizes), so a row of ours beside them is a comparison of setups as much as of weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Published:
    method: str  # the released checkpoint
    score: float  # percent
    source: str  # where the number was read
    category: str = "overall"
    metric: str | None = None  # None: the benchmark's one metric (accuracy)


@dataclass(frozen=True)
class Benchmark:
    name: str  # what the command line and the table call it
    title: str
    path: str  # evalscope | evalscope-custom | ours
    evalscope_id: str | None  # the adapter EvalScope runs
    layout: str  # what the local folder holds
    why: str  # why this path
    published: tuple[Published, ...] = field(default_factory=tuple)
    converter: str | None = None  # svp.evaluation.convert function for evalscope-custom


GREF_MEAN = "grefcoco mean of val/testA/testB"
_VLMR3 = "VLM-R3-7B"
_COVT = "CoVT-7B (Seg+Depth+DINO)"
_SAMTOK = "Qwen2.5VL-SAMTok-3B (rl)"
_VLMR3_P = "VLM-R3 paper (headline table)"
_COVT_P = "CoVT paper Table 1"

BENCHMARKS = {b.name: b for b in (
    Benchmark("vstar_bench", "V* Bench", "evalscope", "vstar_bench",
              "DIR/data/test-*.parquet: text, image, label, category, question_id "
              "(lmms-lab/vstar-bench)",
              "EvalScope has it",
              (Published(_VLMR3, 84.3, "VLM-R3 repo eval log src/eval/evaluation_vstar_log_"
                         "20250808_134358.txt (LLM-judged, 161/191)"),
               Published(_VLMR3, 87.0, "same log", "direct_attributes"),
               Published(_VLMR3, 80.3, "same log", "relative_position"),
               Published(_COVT, 78.0, _COVT_P))),
    Benchmark("math_vista", "MathVista testmini", "evalscope", "math_vista",
              "DIR/data/testmini-*.parquet: pid, question, question_type, answer_type, "
              "choices, answer, precision, decoded_image, metadata (AI4Math/MathVista)",
              "EvalScope has it",
              (Published(_VLMR3, 70.4, _VLMR3_P),)),
    Benchmark("science_qa", "ScienceQA test", "evalscope", "science_qa",
              "DIR/data/test-*.parquet: question, choices, answer, hint, image, task, "
              "grade, subject, topic, category, skill, lecture, solution "
              "(derek-thomas/ScienceQA)",
              "EvalScope has it",
              (Published(_VLMR3, 87.9, _VLMR3_P),)),
    Benchmark("blink", "BLINK val", "evalscope", "blink",
              "DIR/<subset>/val-*.parquet (BLINK-Benchmark/BLINK)", "EvalScope has it",
              (Published(_COVT, 56.0, _COVT_P),)),
    Benchmark("real_world_qa", "RealWorldQA", "evalscope", "real_world_qa",
              "DIR/data/test-*.parquet (lmms-lab/RealWorldQA)", "EvalScope has it",
              (Published(_COVT, 71.6, _COVT_P),)),
    Benchmark("mmmu", "MMMU val", "evalscope", "mmmu",
              "DIR/<subject>/validation-*.parquet (MMMU/MMMU)",
              "EvalScope has it; NEO reports it through VLMEvalKit (number not read here)"),
    Benchmark("hr_bench_4k", "HR-Bench 4K", "evalscope-custom", "general_vmcq",
              "hr_bench_4k.tsv (DreamMr/HR-Bench; VLMEvalKit's TSV: index, image as "
              "base64, question, A-D, answer, category)",
              "not in EvalScope's registry; its TSV becomes general_vmcq, one subset per "
              "category (per-question accuracy)",
              (Published(_COVT, 72.9, _COVT_P),), converter="hr_bench"),
    Benchmark("hr_bench_8k", "HR-Bench 8K", "evalscope-custom", "general_vmcq",
              "hr_bench_8k.tsv (as 4K)", "as HR-Bench 4K",
              (Published(_COVT, 69.4, _COVT_P),), converter="hr_bench"),
    Benchmark("cv_bench", "CV-Bench", "evalscope-custom", "general_vmcq",
              "test*.parquet (nyu-visionx/CV-Bench: idx, type, task, image, question, "
              "choices, answer '(A)')",
              "not in EvalScope's registry; one subset per task, per-question accuracy "
              "(CoVT's single figure: how it was averaged is unclear, its issue #13)",
              (Published(_COVT, 80.0, _COVT_P),), converter="cv_bench"),
    Benchmark("mmvp", "MMVP", "evalscope-custom", "general_vmcq",
              "Questions.csv (Index, Question, Options '(a) .. (b) ..', Correct Answer) and "
              "'MMVP Images/<Index>.jpg' (MMVP/MMVP)",
              "not in EvalScope's registry; per-question accuracy, as the VLM-R3 log "
              "counts (the MMVP paper's pair accuracy is not computed)",
              (Published(_VLMR3, 75.0, "VLM-R3 repo eval log (per-question, 225/300)"),
               Published(_COVT, 58.7, _COVT_P)), converter="mmvp"),
    Benchmark("refseg", "RefCOCO / RefCOCO+ / RefCOCOg / gRefCOCO", "ours", None,
              "DATA/<set>/refs(unc|umd).p or grefs(unc).json + instances.json; COCO "
              "train2014 pictures",
              "EvalScope's refcoco asks for a box or a caption of a drawn region; the skill "
              "answers masks, scored as cIoU / gIoU / Pr@0.5",
              tuple(Published(_SAMTOK, v, "SAMTok paper, as quoted by third-party paper notes "
                              "(mean of the three gRefCOCO splits)", GREF_MEAN, m)
                    for m, v in (("gIoU", 76.7), ("cIoU", 73.7), ("N-acc", 77.1)))),
)}


def get(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]
