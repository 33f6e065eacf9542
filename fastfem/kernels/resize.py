"""Resize a map from feature resolution to input resolution with two small matrices.

FEM maps are computed at feature resolution ``(h, w)`` and resized once to the input size
``(H, W)``. Both methods here are separable, so the resize of one map ``m`` is::

    out = Rh @ m @ Rw^T        Rh: (H, h),  Rw: (W, w)

where row ``i`` of ``Rh`` holds the (at most 4) interpolation weights of output row ``i``.

Why matrices rather than ``jax.image.resize``:

* **Exact TensorFlow parity.** The reference implementations resize with
  ``tf.image.resize(..., method="bicubic")`` (TF's ``ResizeBicubic`` kernel, half-pixel
  centres). That kernel does not evaluate the Keys cubic exactly: it rounds the sub-pixel
  offset to a 1/1024 grid and reads the weights from a precomputed table, with float32
  coordinate arithmetic. ``jax.image.resize(..., "cubic")`` evaluates the exact Keys kernel
  and therefore differs from TF by up to ~1e-3 of the map range at non-integer ratios (and by
  much more when downsampling, where it antialiases by default). Building the weights on the
  host with the same table and the same float32 index arithmetic reproduces TF to float32
  round-off (~1e-7 of the map range).
* **Cheap everywhere.** It is just two small matmuls: jittable, vmappable, shardable, with no
  gather and the same code path on CPU, GPU and TPU.

Weight matrices are built once per ``(in, out, method)`` in NumPy (float64 accumulation,
float32 result) and cached; `resize_map` applies them to one map, `resize_batch` to a stack.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Method = Literal["bicubic", "bilinear"]
METHODS: tuple[str, ...] = ("bicubic", "bilinear")

#: Number of intervals of TF's bicubic coefficient table (``kTableSize`` in TF).
BICUBIC_TABLE_SIZE = 1024
#: Keys cubic parameter used by TF with half-pixel centres (``use_keys_cubic``).
KEYS_A = -0.5

_F32 = np.float32


def _check_sizes(in_size: int, out_size: int) -> tuple[int, int]:
    in_size, out_size = int(in_size), int(out_size)
    if in_size <= 0 or out_size <= 0:
        raise ValueError(f"sizes must be positive, got in_size={in_size}, out_size={out_size}")
    return in_size, out_size


def _half_pixel_coords(in_size: int, out_size: int) -> np.ndarray:
    """Source coordinates of the output pixels, in float32 exactly as TF computes them.

    ``scale = f32(in) / f32(out)``;  ``src_x = (f32(x) + 0.5) * scale - 0.5``, each operation
    rounded to float32 (TF's ``CalculateResizeScale`` and ``HalfPixelScaler``).
    """
    scale = _F32(in_size) / _F32(out_size)
    x = np.arange(out_size, dtype=_F32)
    return (x + _F32(0.5)) * scale - _F32(0.5)


@functools.lru_cache(maxsize=1)
def _keys_table() -> np.ndarray:
    """TF's bicubic coefficient table, float32, shape ``(kTableSize + 1, 2)``.

    For ``t = i / 1024`` (``i = 0..1024``), with ``A = -0.5`` and the arithmetic in float64::

        table[i, 0] = ((A + 2) t - (A + 3)) t^2 + 1                 (Keys kernel on |s| <= 1)
        table[i, 1] = ((A u - 5A) u + 8A) u - 4A,   u = t + 1       (Keys kernel on 1 < |s| < 2)
    """
    a = KEYS_A
    t = np.arange(BICUBIC_TABLE_SIZE + 1, dtype=np.float64) / BICUBIC_TABLE_SIZE
    near = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    u = t + 1.0
    far = ((a * u - 5.0 * a) * u + 8.0 * a) * u - 4.0 * a
    table = np.stack([near, far], axis=1).astype(_F32)
    table.flags.writeable = False
    return table


def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Matrix of TF's half-pixel bicubic resize (``ResizeBicubic``, Keys ``A = -0.5``).

    Returns ``R`` of shape ``(out_size, in_size)``, float32, such that ``R @ v`` equals
    ``tf.image.resize`` (``method="bicubic"``, ``antialias=False``) of the 1-D signal ``v``.
    For output index ``x`` (float32 arithmetic, ``lrint`` rounds half to even)::

        s      = (x + 0.5) * in/out - 0.5
        k      = floor(s);   d = s - k;   o = lrint(1024 d)
        w      = (T[o, 1], T[o, 0], T[1024 - o, 0], T[1024 - o, 1])    taps k-1, k, k+1, k+2

    with ``T`` the table of `_keys_table`. Taps outside ``[0, in_size)`` get weight 0 and the
    remaining weights are divided by their (float32) sum, as in TF's ``use_keys_cubic`` path.
    """
    in_size, out_size = _check_sizes(in_size, out_size)
    table = _keys_table()
    src = _half_pixel_coords(in_size, out_size)
    base = np.floor(src)
    delta = src - base  # float32
    offset = np.rint(delta * _F32(BICUBIC_TABLE_SIZE)).astype(np.int64)
    base = base.astype(np.int64)

    weights = np.stack(
        [
            table[offset, 1],
            table[offset, 0],
            table[BICUBIC_TABLE_SIZE - offset, 0],
            table[BICUBIC_TABLE_SIZE - offset, 1],
        ],
        axis=1,
    )  # (out, 4) float32
    taps = base[:, None] + np.arange(-1, 3, dtype=np.int64)[None, :]
    inside = (taps >= 0) & (taps < in_size)
    weights = np.where(inside, weights, _F32(0.0))

    # Renormalise in float32 like TF: sequential sum, one reciprocal, four products.
    total = ((weights[:, 0] + weights[:, 1]) + weights[:, 2]) + weights[:, 3]
    ok = np.abs(total) >= _F32(1000.0) * np.finfo(_F32).tiny
    inv = np.where(ok, _F32(1.0) / np.where(ok, total, _F32(1.0)), _F32(1.0)).astype(_F32)
    weights = (weights * inv[:, None]).astype(_F32)

    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_size)[:, None], taps.shape)
    np.add.at(matrix, (rows, np.clip(taps, 0, in_size - 1)), weights.astype(np.float64))
    return matrix.astype(_F32)


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Matrix of half-pixel bilinear resize without antialiasing, edge-clamped.

    Returns ``R`` of shape ``(out_size, in_size)``, float32, matching
    ``tf.image.resize(method="bilinear")`` (TF's ``ResizeBilinear``, half-pixel centres) and
    ``cv2.resize(..., interpolation=cv2.INTER_LINEAR)`` on float input. For output index ``x``
    (float32 arithmetic)::

        s = (x + 0.5) * in/out - 0.5;   k = floor(s);   l = s - k
        R[x, clip(k)] += 1 - l;         R[x, clip(k + 1)] += l

    with ``clip`` clamping to ``[0, in_size - 1]`` (so the border value is repeated).
    """
    in_size, out_size = _check_sizes(in_size, out_size)
    src = _half_pixel_coords(in_size, out_size)
    base = np.floor(src)
    lerp = (src - base).astype(np.float64)
    base = base.astype(np.int64)
    lower = np.clip(base, 0, in_size - 1)
    upper = np.clip(base + 1, 0, in_size - 1)

    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, lower), 1.0 - lerp)
    np.add.at(matrix, (rows, upper), lerp)
    return matrix.astype(_F32)


_BUILDERS = {"bicubic": bicubic_matrix, "bilinear": bilinear_matrix}


def check_method(method: str) -> None:
    """Raise a ValueError naming the allowed methods if ``method`` is unknown."""
    if method not in METHODS:
        raise ValueError(f"unknown resize method {method!r}; expected one of {METHODS}")


def resize_matrices(
    in_hw: tuple[int, int], out_hw: tuple[int, int], method: Method = "bicubic"
) -> tuple[np.ndarray, np.ndarray]:
    """Cached, read-only ``(Rh, Rw)`` with ``Rh: (H, h)`` and ``Rw: (W, w)``, float32.

    ``resize(m) = Rh @ m @ Rw^T`` for a map ``m`` of shape ``in_hw = (h, w)`` resized to
    ``out_hw = (H, W)`` with ``method`` in ``{"bicubic", "bilinear"}``. The same arrays are
    returned for equal arguments (``functools.lru_cache``); they are read-only.
    """
    check_method(method)
    (h, w), (big_h, big_w) = in_hw, out_hw
    return _resize_matrices_cached((int(h), int(w)), (int(big_h), int(big_w)), method)


@functools.lru_cache(maxsize=128)
def _resize_matrices_cached(
    in_hw: tuple[int, int], out_hw: tuple[int, int], method: str
) -> tuple[np.ndarray, np.ndarray]:
    build = _BUILDERS[method]
    rh, rw = build(in_hw[0], out_hw[0]), build(in_hw[1], out_hw[1])
    rh.flags.writeable = False
    rw.flags.writeable = False
    return rh, rw


def resize_map(m: jax.Array, rh: jax.Array, rw: jax.Array) -> jax.Array:
    """Resize one map: ``out = Rh @ m @ Rw^T``, (h, w) -> (H, W), float32.

    ``rh`` (H, h) and ``rw`` (W, w) come from `resize_matrices`. Both products run in float32
    with ``Precision.HIGHEST`` (no bf16 passes on TPU/GPU). Per-sample: callers ``vmap`` it.
    """
    hi = jax.lax.Precision.HIGHEST
    m = jnp.asarray(m, jnp.float32)
    rows = jnp.matmul(jnp.asarray(rh, jnp.float32), m, precision=hi)  # (H, w)
    return jnp.matmul(rows, jnp.asarray(rw, jnp.float32).T, precision=hi)  # (H, W)


def resize_batch(maps: jax.Array, out_hw: tuple[int, int], method: Method = "bicubic") -> jax.Array:
    """Resize a stack of maps ``(..., h, w) -> (..., H, W)`` in one einsum, float32.

    The one batched resize every explainer, metric and audit uses (`resize_map` vmapped, as
    one contraction). A stack already at ``out_hw`` is returned as float32, unchanged.

    ``out[..., i, j] = sum_{a, b} Rh[i, a] maps[..., a, b] Rw[j, b]``, with the matrices of
    `resize_matrices` built from the static shape of ``maps``.
    """
    check_method(method)
    h, w = maps.shape[-2:]
    if (int(h), int(w)) == (int(out_hw[0]), int(out_hw[1])):
        return jnp.asarray(maps, jnp.float32)
    rh, rw = resize_matrices((int(h), int(w)), (int(out_hw[0]), int(out_hw[1])), method)
    return jnp.einsum(
        "Hh,...hw,Ww->...HW",
        jnp.asarray(rh),
        jnp.asarray(maps, jnp.float32),
        jnp.asarray(rw),
        precision=jax.lax.Precision.HIGHEST,
    )
