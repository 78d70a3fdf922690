"""Peer implementations the training benchmark compares relcore against.

Nothing here is imported by relcore or the sweeps: only by
``sweeps/bench/bench_training.py``, with the peers' packages on ``PYTHONPATH``
(never project dependencies; see that script's docstring).
"""
