"""Ray Tune orchestration, MLflow tracking and reports for relcore sweeps.

``sweeps`` imports ``relcore``; ``relcore`` never imports ``sweeps``.
"""
