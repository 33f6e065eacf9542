"""Ground truth by reliance: does the model use the planted mark on this image?

An image is *relied on* when it carries the mark and the mark moves the model towards the
mark's class ``c`` (the class it went with in training), judged against the image's clean twin
(the same image without the mark)::

    relied_on_i = marked_i and ( p_c(image_i) - p_c(clean_i) >= threshold
                                 or (argmax p(image_i) == c and argmax p(clean_i) != c) )

A kind the model ignores gives no relied-on image, whatever the maps show.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from benchmarks.shortcut_data.generate import ShortcutSet

__all__ = ["moved_to", "relied_on", "reliance_summary"]


def _probabilities(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    p = np.asarray(predict(images), np.float64)
    if p.ndim != 2 or p.shape[0] != images.shape[0]:
        raise ValueError(
            f"predict must return (n, classes) probabilities for n = {images.shape[0]} "
            f"images, got shape {p.shape}"
        )
    return p


def relied_on(
    predict: Callable[[np.ndarray], np.ndarray], s: ShortcutSet, threshold: float = 0.5
) -> np.ndarray:
    """(n,) bool: the rows of ``s`` whose mark the model ``predict`` (images -> (n, classes)
    probabilities) relies on (module docstring; ``c = s.mark_class``)."""
    out = np.zeros(len(s), bool)
    rows = np.flatnonzero(s.marked)
    if rows.size == 0:
        return out
    p_mark = _probabilities(predict, s.images[rows])
    p_clean = _probabilities(predict, s.clean[rows])
    out[rows] = moved_to(p_mark, p_clean, s.mark_class, threshold)
    return out


def moved_to(p_mark: np.ndarray, p_clean: np.ndarray, c: int, threshold: float = 0.5) -> np.ndarray:
    """(n,) bool: the rows whose marked image's probabilities ``p_mark`` (n, classes) raise
    class ``c`` by ``threshold`` over the clean twin's ``p_clean``, or turn the prediction to
    ``c`` (module docstring)."""
    if not 0 <= c < p_mark.shape[1]:
        raise ValueError(f"mark_class {c} is not a class of predict's {p_mark.shape[1]} outputs")
    rise = p_mark[:, c] - p_clean[:, c] >= threshold
    flip = (p_mark.argmax(axis=1) == c) & (p_clean.argmax(axis=1) != c)
    return rise | flip


def reliance_summary(relied: np.ndarray, s: ShortcutSet) -> dict:
    """Counts of ``relied`` (from `relied_on`) over ``s``: ``marked``, ``marked_other`` (marked
    images whose object is not ``mark_class``), ``relied_on`` (all rows), ``relied_on_other``
    (among ``marked_other``) and ``relied_on_share`` = ``relied_on_other / marked_other`` (NaN
    when there is none)."""
    relied = np.asarray(relied, bool)
    if relied.shape != (len(s),):
        raise ValueError(f"relied needs one flag per row of the set ({len(s)}), got {relied.shape}")
    other = s.marked & (s.objects != s.mark_class)
    n_other = int(other.sum())
    relied_other = int(np.sum(relied & other))
    return {
        "marked": int(s.marked.sum()),
        "marked_other": n_other,
        "relied_on": int(relied.sum()),
        "relied_on_other": relied_other,
        "relied_on_share": relied_other / n_other if n_other else float("nan"),
    }
