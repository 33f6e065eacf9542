"""What the host does with a step's finiteness flags: raise naming the inputs, or NaN maps.

Every step returns ``finite`` (B, 2) bool per example: column 0 every input pixel is finite,
column 1 every activation is (the rule lives in `fastfem.kernels.finite`). `NonFiniteCheck` is
the per-batch hook of `fastfem.engine.runner.collect` that applies an explainer's policy:

* ``"raise"`` (default): a ValueError naming the indices of the inputs whose pixels or
  activations are NaN/inf (the first 20, and how many more);
* ``"nan"``: the maps of exactly those inputs become all-NaN, the others are untouched, and the
  indices are kept (`NonFiniteCheck.indices`). Nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

OnNonFinite = Literal["raise", "nan"]
ON_NONFINITE: tuple[str, ...] = ("raise", "nan")
NAN_MAPS_HINT = ", or pass on_nonfinite='nan' to get NaN maps for them instead of an error"


def check_policy(policy: str) -> OnNonFinite:
    """Validate an ``on_nonfinite`` value."""
    if policy not in ON_NONFINITE:
        raise ValueError(f"on_nonfinite must be 'raise' or 'nan'; got {policy!r}")
    return policy  # type: ignore[return-value]


def raise_on_nonfinite(
    finite: np.ndarray, offset: int, layer: str, what: str = "inputs", hint: str = ""
) -> None:
    """Raise a ValueError naming the samples whose pixels or activations are NaN/inf.

    ``finite`` is one batch's (N, 2) flags; ``offset`` the batch's first index in the whole
    input; ``hint`` ends the message (e.g. the option that returns NaN maps instead).
    """
    bad = np.flatnonzero(~finite.all(axis=1))
    if bad.size:
        shown = ", ".join(
            f"{offset + int(i)} ({'input' if not finite[i, 0] else 'activations'})"
            for i in bad[:20]
        )
        more = f" and {bad.size - 20} more" if bad.size > 20 else ""
        raise ValueError(
            f"non-finite values (NaN or inf) in the {what} or in their activations at layer "
            f"{layer!r}, at index(es) {shown}{more}; fix those images{hint}"
        )


class NonFiniteCheck:
    """`fastfem.engine.runner.collect`'s per-batch hook for the flags of a step's outputs.

    Args:
      layer: the explained layer(s), for the message.
      policy: ``"raise"`` or ``"nan"``.
      flags: ``(flag key, what)`` pairs: each key's (N, 2) flags are checked and dropped from
        the batch; ``what`` names those inputs in the message (e.g. ``"references"``).
      maps: the keys set to NaN for the non-finite examples (policy ``"nan"``).
      hint: appended to the error message.
    """

    def __init__(
        self,
        layer: str,
        policy: OnNonFinite = "raise",
        flags: Sequence[tuple[str, str]] = (("finite", "inputs"),),
        maps: Sequence[str] = ("maps",),
        hint: str = "",
    ):
        self.layer = layer
        self.policy = check_policy(policy)
        self.flags = tuple(flags)
        self.maps = tuple(maps)
        self.hint = hint
        self._bad: list[np.ndarray] = []

    @property
    def indices(self) -> np.ndarray:
        """Indices of the examples seen so far whose flags were not all True (policy nan)."""
        return np.concatenate(self._bad) if self._bad else np.zeros(0, np.int64)

    def __call__(self, batch: dict[str, np.ndarray], offset: int) -> dict[str, np.ndarray]:
        batch = dict(batch)
        ok = None
        for key, what in self.flags:
            finite = batch.pop(key)
            if self.policy == "raise":
                raise_on_nonfinite(finite, offset, self.layer, what, self.hint)
            good = finite.all(axis=1)
            ok = good if ok is None else ok & good
        if self.policy == "nan" and ok is not None and not ok.all():
            self._bad.append(offset + np.flatnonzero(~ok))
            for key in self.maps:
                m = batch[key].astype(np.float32, copy=True)
                m[~ok] = np.nan
                batch[key] = m
        return batch
