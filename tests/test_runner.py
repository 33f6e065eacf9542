"""`fastfem.engine.runner`: padding, splitting, params per call, stage chains, sharding,
`collect`."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from subprocess_runs import run_json, simulated_devices

from fastfem.engine.runner import Runner, batch_rows, collect
from fastfem.engine.step import CARRY


def affine(params, batch):
    """Per-example ``a * x + b`` summed over the features, and the row's own index."""
    a, b = params
    return {"y": jnp.sum(a * batch["x"] + b, axis=1), "i": batch["i"]}


def host_batches(x, size):
    for start in range(0, len(x), size):
        yield {"x": x[start : start + size], "i": np.arange(start, min(start + size, len(x)))}


def test_last_batch_padded_one_trace_and_no_padding_rows_back():
    traces = []

    def step(params, batch):
        traces.append(batch["x"].shape)
        return affine(params, batch)

    x = np.random.default_rng(0).random((70, 5), dtype=np.float32)
    runner = Runner(step, batch_size=32)
    outs = list(runner.run((2.0, 1.0), host_batches(x, 32), count=70))
    assert [o["y"].shape[0] for o in outs] == [32, 32, 6]  # padding rows removed
    assert traces == [(32, 5)]  # the batch of 6 is padded to 32, not retraced
    got = np.concatenate([o["y"] for o in outs])
    np.testing.assert_allclose(got, (2.0 * x + 1.0).sum(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(np.concatenate([o["i"] for o in outs]), np.arange(70))


def test_large_host_batch_is_split_and_small_inputs_get_a_small_batch():
    x = np.random.default_rng(1).random((100, 3), dtype=np.float32)
    runner = Runner(affine, batch_size=16)
    outs = list(runner.run((1.0, 0.0), [{"x": x, "i": np.arange(100)}], count=100))
    assert [o["y"].shape[0] for o in outs] == [16] * 6 + [4]
    assert runner.device_batch(5) == 5 and runner.device_batch(None) == 16


def test_params_go_in_per_call_without_retracing():
    traces = []

    def step(params, batch):
        traces.append(1)
        return affine(params, batch)

    x = np.ones((4, 2), np.float32)
    runner = Runner(step, batch_size=4)
    first = next(runner.run((jnp.float32(1.0), jnp.float32(0.0)), host_batches(x, 4)))
    second = next(runner.run((jnp.float32(3.0), jnp.float32(1.0)), host_batches(x, 4)))
    np.testing.assert_array_equal(first["y"], [2.0] * 4)
    np.testing.assert_array_equal(second["y"], [8.0] * 4)
    assert len(traces) == 1


def test_params_leaves_are_placed_once_and_new_leaves_are_used():
    """A params tree rebuilt around the same weights reuses their placed copy; a new leaf (or
    a new value for the same name) is placed and used."""
    runner = Runner(affine, batch_size=4)
    w = np.full((2,), 2.0, np.float32)
    first = runner.replicate((w, np.float32(1.0)))
    again = runner.replicate((w, np.float32(5.0)))
    assert again[0] is first[0]  # the same weights object: not copied again
    assert float(again[1]) == 5.0
    other = runner.replicate((w.copy(), np.float32(5.0)))
    assert other[0] is not first[0]
    np.testing.assert_array_equal(np.asarray(other[0]), w)
    x = np.ones((4, 2), np.float32)
    out = next(runner.run((w, np.float32(3.0)), host_batches(x, 4)))
    np.testing.assert_array_equal(out["y"], [10.0] * 4)


def test_stage_chain_carries_on_device_and_fetches_results_only():
    def first(params, batch):
        doubled = batch["x"] * params
        return {"sum": doubled.sum(axis=1), CARRY: {"d": doubled}}

    def second(params, carry):
        return {"max": carry["d"].max(axis=1)}

    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = next(Runner([first, second], batch_size=8).run(2.0, [{"x": x}], count=4))
    assert set(out) == {"sum", "max"}  # the carry never comes back
    np.testing.assert_array_equal(out["sum"], (2 * x).sum(axis=1))
    np.testing.assert_array_equal(out["max"], (2 * x).max(axis=1))


def test_batch_arrays_must_share_their_length():
    with pytest.raises(ValueError, match="different lengths"):
        batch_rows({"x": np.zeros((3, 2)), "i": np.zeros(4)})


def test_collect_with_and_without_count_and_the_check_hook():
    batches = [{"m": np.full((3, 2), k, np.float32)} for k in range(3)]
    offsets = []

    def check(batch, offset):
        offsets.append(offset)
        return {"m": batch["m"] + 10}

    known = collect(iter(batches), count=9, check=check)
    unknown = collect(iter(batches), count=None)
    assert offsets == [0, 3, 6]
    np.testing.assert_array_equal(known["m"] - 10, unknown["m"])
    assert known["m"].shape == (9, 2)


SHARDED = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from fastfem.engine.runner import Runner

def step(params, batch):
    return {"y": jnp.sum(batch["x"] * params, axis=1)}

x = np.random.default_rng(2).random((37, 4), dtype=np.float32)
runner = Runner(step, batch_size=10)  # rounded up to a multiple of the 4 devices: 12
outs = list(runner.run(np.float32(3.0), [{"x": x}], count=37))
sharding = runner._stages[0](np.float32(3.0), {"x": jnp.asarray(x[:12])})["y"].sharding
print(json.dumps({
    "devices": len(jax.devices()),
    "batch": runner.batch_size,
    "rows": [int(o["y"].shape[0]) for o in outs],
    "err": float(np.abs(np.concatenate([o["y"] for o in outs]) - 3 * x.sum(1)).max()),
    "spread": len(sharding.device_set),
}))
"""


def test_four_devices_shard_the_batch():
    res = run_json(SHARDED, env=simulated_devices(4))
    assert res["devices"] == 4 and res["batch"] == 12 and res["spread"] == 4
    assert res["rows"] == [12, 12, 12, 1] and res["err"] < 1e-5
