"""Benchmark harness and the eager-TensorFlow peers fastfem is measured against."""
