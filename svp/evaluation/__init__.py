"""Evaluation of a served skill model on the papers' benchmarks (``python -m svp.evaluation``).

It sits on top of :mod:`svp.serve`: every benchmark is asked over the OpenAI API, so the
skill's loop (crops, mask decoding) runs inside the server exactly as users get it. Benchmarks
EvalScope has go through EvalScope itself (:mod:`svp.evaluation.evalscope_run`); those it
lacks are converted to its custom-dataset formats (:mod:`svp.evaluation.convert`); referring
segmentation, which EvalScope scores as captioning rather than as masks, is ours
(:mod:`svp.evaluation.refseg`). :mod:`svp.evaluation.table` puts them in one table beside the
published numbers (:mod:`svp.evaluation.benchmarks`).
"""
