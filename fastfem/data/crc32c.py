"""CRC-32C (Castagnoli), the checksum of TFRecord files, in NumPy — no compiled extension.

The CRC (reflected, polynomial ``0x82F63B78``, initial value and final XOR ``0xFFFFFFFF``) is
linear over GF(2), which makes it vectorisable. Write ``raw(m)`` for the register after the
message ``m`` from the initial value 0 and ``S_n`` for the register's map through ``n`` zero
bytes (linear in the register). Then:

* ``raw`` ignores leading zero bytes, and the initial value ``0xFFFFFFFF`` equals XOR-ing
  ``0xFF`` into the first four bytes: ``crc(m) = raw(m') ^ 0xFFFFFFFF``;
* the message is zero-padded at the front to ``K`` lanes of ``LANE`` bytes and the raw
  register of every lane is computed at once, one 4-byte word column per step (two lookups in
  65536-entry tables per word, on arrays of ``K``);
* lanes are combined ``FAN_IN`` at a time, level by level:
  ``raw(a_0 ... a_{G-1}) = XOR_j S_{(G-1-j) L}(raw(a_j))`` for lanes ``a_j`` of ``L`` bytes,
  each ``S`` applied as four byte-table lookups (tables built once per level).

About 0.3 ms per 100 kB on one core (measured on a shared 2-core machine): a small share of
decoding the image it guards. Checked in the tests against a bit-by-bit reference of the
definition, the standard check value ``crc32c(b"123456789") == 0xE3069283`` and TFRecords
written by TensorFlow.
"""

from __future__ import annotations

import functools

import numpy as np

POLY = 0x82F63B78
LANE = 32  # bytes per lane (a multiple of 4)
FAN_IN = 16  # lanes combined at a time
SMALL = 256  # shorter messages use the plain byte loop
UNITS = np.uint32(1) << np.arange(32, dtype=np.uint32)


def _byte_table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(POLY), t >> 1).astype(np.uint32)
    return t


TABLE = _byte_table()
_TABLE_LIST = [int(v) for v in TABLE]


def crc32c_small(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C of ``data`` continuing from ``crc`` (0 for a new message), byte by byte."""
    c = crc ^ 0xFFFFFFFF
    table = _TABLE_LIST
    for b in bytes(data):
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _zero_steps(values: np.ndarray, n: int) -> np.ndarray:
    """Raw registers ``values`` after ``n`` zero bytes (vectorised over ``values``)."""
    for _ in range(n):
        values = TABLE[values & 0xFF] ^ (values >> 8)
    return values


def byte_tables(images: np.ndarray) -> np.ndarray:
    """(4, 256) tables of the linear map whose images of the 32 unit registers are
    ``images``: ``map(r) = T[0][r & 0xFF] ^ T[1][(r >> 8) & 0xFF] ^ T[2][...] ^ T[3][r >> 24]``."""
    v = np.arange(256, dtype=np.uint32)
    bits = ((v[:, None] >> np.arange(8, dtype=np.uint32)) & 1).astype(bool)  # (256, 8)
    out = np.zeros((4, 256), np.uint32)
    for i in range(4):
        cols = images[8 * i : 8 * i + 8]
        out[i] = np.bitwise_xor.reduce(np.where(bits, cols[None, :], np.uint32(0)), axis=1)
    return out


def apply_map(tables: np.ndarray, r: np.ndarray) -> np.ndarray:
    """The linear map of ``tables`` (4, 256) applied to the registers ``r``."""
    idx = r.astype("<u4").view(np.uint8).reshape(-1, 4).astype(np.intp) + np.arange(4) * 256
    return np.bitwise_xor.reduce(np.take(tables.ravel(), idx), axis=1)


@functools.cache
def lane_shift(level: int) -> np.ndarray:
    """Images of the unit registers under ``S_L``, ``L = LANE * FAN_IN**level``."""
    if level == 0:
        return _zero_steps(UNITS, LANE)
    below = level_tables(level - 1)  # [m - 1]: S_{m L'} of the level below
    return apply_map(below[FAN_IN - 2], lane_shift(level - 1))  # S_{(G-1)L'} S_{L'} = S_{G L'}


@functools.cache
def level_tables(level: int) -> np.ndarray:
    """(FAN_IN - 1, 4, 256): entry ``m - 1`` holds the byte tables of ``S_{m L}`` at ``level``."""
    one = lane_shift(level)
    one_tables = byte_tables(one)
    images = [one]
    for _ in range(FAN_IN - 2):
        images.append(apply_map(one_tables, images[-1]))
    return np.stack([byte_tables(im) for im in images])


@functools.cache
def word_tables() -> tuple[np.ndarray, np.ndarray]:
    """Two 65536-entry tables that advance a raw register by one 4-byte word: after
    ``r ^= word``, ``r = LO[r & 0xFFFF] ^ HI[r >> 16]`` (512 kB, built once)."""
    v = np.arange(65536, dtype=np.uint32)
    return _zero_steps(v, 4), _zero_steps(v << 16, 4)


def lane_registers(words: np.ndarray) -> np.ndarray:
    """Raw registers (initial value 0) of each row of ``words`` (K, LANE / 4) little-endian
    uint32, one word column per step for all lanes at once."""
    lo_table, hi_table = word_tables()
    r = np.zeros(words.shape[0], np.uint32)
    lo = np.empty_like(r)
    for col in np.ascontiguousarray(words.T):
        np.bitwise_xor(r, col, out=r)
        np.bitwise_and(r, 0xFFFF, out=lo)
        np.right_shift(r, 16, out=r)
        np.take(hi_table, r, out=r)
        np.bitwise_xor(r, np.take(lo_table, lo), out=r)
    return r


def combine_lanes(r: np.ndarray, level: int) -> np.ndarray:
    """Registers of ``FAN_IN`` consecutive lanes of ``level`` -> those of the next level."""
    g = FAN_IN
    pad = (-len(r)) % g
    if pad:
        r = np.concatenate([np.zeros(pad, np.uint32), r])  # zero lanes in front add nothing
    rows = r.reshape(-1, g)
    tables = level_tables(level)[::-1].reshape(-1)  # column j: S_{(G-1-j) L}
    idx = rows[:, :-1].astype("<u4").view(np.uint8).reshape(len(rows), g - 1, 4).astype(np.intp)
    idx += (np.arange((g - 1) * 4) * 256).reshape(g - 1, 4)
    return np.bitwise_xor.reduce(np.take(tables, idx), axis=(1, 2)) ^ rows[:, -1]


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """The CRC-32C of ``data`` (module docstring)."""
    n = len(data)
    if n < SMALL:
        return crc32c_small(data)
    lanes = -(-n // LANE)
    buf = np.zeros(lanes * LANE, np.uint8)
    start = lanes * LANE - n
    buf[start:] = np.frombuffer(data, np.uint8)
    buf[start : start + 4] ^= 0xFF  # the initial value 0xFFFFFFFF
    r = lane_registers(buf.view("<u4").reshape(lanes, LANE // 4))
    level = 0
    while len(r) > 1:
        r = combine_lanes(r, level)
        level += 1
    return int(r[0]) ^ 0xFFFFFFFF


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """TFRecord's masked CRC: ``((c >> 15) | (c << 17)) + 0xA282EAD8`` (mod 2**32)."""
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF
