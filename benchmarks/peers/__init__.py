"""Peer implementations (eager TensorFlow, written from the formulas in their docstrings) for parity
tests and throughput comparisons. They import TensorFlow: run them with
``KERAS_BACKEND=tensorflow``."""
