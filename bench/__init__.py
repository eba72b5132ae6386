"""Benchmarks (not tests). ``python -m bench`` runs the load benchmarks (``bench/runs.py``) and
``python -m bench.report`` turns ``bench/results/*.json`` into the tables of ``BENCHMARKS.md``
and the plots beside them; other modules run on their own with ``python -m bench.<name>``."""
