#!/usr/bin/env python
"""Probe XLA:CPU on the convolutions `fastfem.converters.cpu_convs.conv_forms` rewrites: stock vs
CPU form.

* depthwise 3x3 (MobileNetV2's shapes, SAME): ``lax.conv_general_dilated(feature_group_count=C)``
  (what Keras-JAX runs) vs `fastfem.converters.cpu_convs.depthwise.depthwise_conv_taps`;
* 1x1 (MobileNetV2's and ResNet50's pointwise shapes): ``lax.conv_general_dilated`` vs
  `fastfem.converters.cpu_convs.pointwise.pointwise_conv_dot`.

Each pair is jitted and timed interleaved (A B A B ...) on the same device-resident inputs;
the ratio stock / CPU form is taken per round and reported as median, min and max, with the
max relative difference of the outputs.

Usage::

    python -m benchmarks.probe_depthwise [--batch 32] [--rounds 7] [--out probe.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from fastfem.converters.cpu_convs.depthwise import depthwise_conv_taps
from fastfem.converters.cpu_convs.pointwise import pointwise_conv_dot
from jax import lax

#: (size, channels, stride) of MobileNetV2's depthwise convs at 224x224.
DEPTHWISE = [
    (112, 32, 1),
    (112, 96, 2),
    (56, 144, 1),
    (56, 144, 2),
    (28, 192, 1),
    (28, 192, 2),
    (14, 384, 1),
    (14, 576, 1),
    (14, 576, 2),
    (7, 960, 1),
]
#: (size, Cin, Cout, stride) of 1x1 convs: MobileNetV2 then ResNet50.
POINTWISE = [
    (112, 32, 16, 1),
    (112, 16, 96, 1),
    (56, 24, 144, 1),
    (56, 144, 24, 1),
    (28, 192, 32, 1),
    (14, 384, 64, 1),
    (7, 960, 160, 1),
    (7, 320, 1280, 1),
    (56, 64, 256, 1),
    (56, 256, 64, 1),
    (56, 256, 512, 2),
    (28, 512, 128, 1),
    (14, 1024, 256, 1),
    (7, 2048, 512, 1),
]
NHWC = ("NHWC", "HWIO", "NHWC")


def lax_depthwise(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """Keras-JAX's depthwise conv: kernel (3, 3, C, 1) as (3, 3, 1, C), C groups."""
    c = x.shape[-1]
    return lax.conv_general_dilated(
        x, w.reshape(3, 3, 1, c), (stride, stride), "SAME", dimension_numbers=NHWC,
        feature_group_count=c,
    )  # fmt: skip


def lax_pointwise(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """Keras-JAX's 1x1 conv."""
    return lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=NHWC)


def paired(
    stock: Callable[[], jax.Array], fast: Callable[[], jax.Array], rounds: int
) -> dict[str, float]:
    """Interleaved timings; ratio = stock / fast per round (median, min, max), seconds."""
    ts, tf = [], []
    for _ in range(rounds):
        for fn, acc in ((stock, ts), (fast, tf)):
            t0 = time.perf_counter()
            fn().block_until_ready()
            acc.append(time.perf_counter() - t0)
    r = [a / b for a, b in zip(ts, tf, strict=True)]
    return {
        "stock_s": statistics.median(ts),
        "fast_s": statistics.median(tf),
        "ratio_median": statistics.median(r),
        "ratio_min": min(r),
        "ratio_max": max(r),
    }


def rel_diff(a: jax.Array, ref: jax.Array) -> float:
    """max |a - ref| / max |ref|."""
    return float(jnp.max(jnp.abs(a - ref)) / jnp.max(jnp.abs(ref)))


def probe(batch: int, rounds: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    cases = [("depthwise", s) for s in DEPTHWISE] + [("pointwise", s) for s in POINTWISE]
    for kind, shape in cases:
        if kind == "depthwise":
            size, cin, stride = shape
            cout, w_shape = cin, (3, 3, cin, 1)
            stock_fn, fast_fn = lax_depthwise, depthwise_conv_taps
            fast_args = {"padding": "same"}
        else:
            size, cin, cout, stride = shape
            w_shape = (1, 1, cin, cout)
            stock_fn, fast_fn = lax_pointwise, pointwise_conv_dot
            fast_args = {}
        x = jnp.asarray(rng.standard_normal((batch, size, size, cin), np.float32))
        w = jnp.asarray(rng.standard_normal(w_shape, np.float32))
        stock = jax.jit(lambda x, w, f=stock_fn, s=stride: f(x, w, s))
        fast = jax.jit(lambda x, w, f=fast_fn, s=stride, kw=fast_args: f(x, w, s, **kw))
        err = rel_diff(fast(x, w), stock(x, w))
        row = {
            "kind": kind,
            "shape": f"{size}x{size}x{cin}->{cout} s{stride}",
            "batch": batch,
            "max_rel_diff": err,
        }
        row.update(paired(functools.partial(stock, x, w), functools.partial(fast, x, w), rounds))
        print(
            f"{kind:9s} {row['shape']:22s} stock {row['stock_s'] * 1e3:7.1f} ms  "
            f"form {row['fast_s'] * 1e3:7.1f} ms  x{row['ratio_median']:.2f} "
            f"[{row['ratio_min']:.2f}, {row['ratio_max']:.2f}]  diff {err:.1e}",
            file=sys.stderr,
            flush=True,
        )
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = ap.parse_args()
    rows = probe(args.batch, args.rounds)
    text = json.dumps({"device": str(jax.devices()[0]), "rows": rows}, indent=1)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
