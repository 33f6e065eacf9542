"""Peer implementations (eager TensorFlow, written from DESIGN.md's formulas) for parity tests
and throughput comparisons. They import TensorFlow: run them with ``KERAS_BACKEND=tensorflow``."""
