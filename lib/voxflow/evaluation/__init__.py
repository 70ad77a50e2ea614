"""Scoring predictions against reference labels (rules evaluate, aggregate); the metrics are voxflow.core.metrics."""
