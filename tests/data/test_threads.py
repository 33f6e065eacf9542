"""Host decoding threads: half the cores (1-8) when the model runs on the CPU, every core (1-32)
on an accelerator, and what the caller asks for always wins."""

from __future__ import annotations

import jax
import pytest

from fastfem.audit.run import read_options
from fastfem.data.records import ReadOptions, default_threads, host_threads, usable_cores


@pytest.mark.parametrize(
    ("cores", "cpu", "accelerator"),
    [(1, 1, 1), (2, 1, 2), (3, 1, 3), (16, 8, 16), (20, 8, 20), (64, 8, 32), (256, 8, 32)],
)
def test_threads_fit_the_host(cores, cpu, accelerator):
    assert host_threads(cores, "cpu") == cpu
    for backend in ("gpu", "cuda", "rocm", "tpu"):
        assert host_threads(cores, backend) == accelerator


def test_the_default_follows_where_jax_runs_the_model():
    here = host_threads(usable_cores(), jax.default_backend())
    assert default_threads() == here
    assert ReadOptions().threads == here
    assert read_options("crop", 10**6, "black", None).threads == here
    assert default_threads("cuda") == min(32, usable_cores())


def test_asked_threads_win():
    assert read_options("crop", 10**6, "black", 5).threads == 5
    with pytest.raises(ValueError, match="threads must be a positive integer; got 0"):
        read_options("crop", 10**6, "black", 0)
