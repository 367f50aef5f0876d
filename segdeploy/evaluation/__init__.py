"""Comparison and evaluation, below export, precision and bench (see docs/design.md, "Evaluation").

* `outputs`: what a graph outputs (logits or a class map) and how it becomes class maps;
* `compare`: one output against another, and one summary of such comparisons;
* `batches`: the one batch reader (images → preprocessed batches);
* `engine`: the one evaluation engine (predictors × batches → confusion matrices).
"""
