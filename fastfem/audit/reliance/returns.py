"""Where a colour's rows go once it is taken away: back to many classes, or to one (host, NumPy).

Without labels a colour lead (`fastfem.audit.reliance.rules.colour_lead`) that knocks out
most of its class — more than ``rules.MAX_COLOUR_RATE`` of its sampled rows — may be either
of two things:

* a **class's own colour**: its objects are red (a model that tells red objects from blue
  ones). Taken away, the red leaves one kind of image, a grey object, which the model puts
  in one class, or a few;
* a **coloured mark the model follows on most of the class**: the mark was planted on images
  of every class, and the class's predictions are mostly those images (measured: digits
  drawn in one red on 12% of the training images, labelled class 2; on the test split, the
  red on 15% of every class, 92 of the class's 145 predictions are red digits of other
  classes, and taking red away knocks out 0.85 of its sampled rows). Taken away, the images
  go back to their own classes: to many.

So for such a lead the sweep runs the colour probe on the sample again and reads, for each
of the class's hit rows (dosed and knocked out, `stats.hit_rows`) that leaves the class,
the class it goes to. With ``n_k`` of them going to class ``k``,

    return_share = max_k n_k / sum_k n_k

and the lead is a candidate without labels where at least ``MIN_RETURNS`` rows leave and
``return_share < MAX_RETURN_SHARE``: no class takes half of them, so they go back to three
classes or more. Measured: the red digits' class, 68 of its 80 sampled rows knocked out,
0.18 (over the whole test split its 116 hit rows, 111 of them leaving, go to all nine
other classes, the largest 19: 0.17); a model whose classes are a red blob, a blue blob and
neither sends every red blob to "neither" (1.00).
A model of two or three classes has too few classes to tell the two apart this way: such a
lead stays a lead, as before, and labels decide.
"""

from __future__ import annotations

import numpy as np

from fastfem.audit.reliance.stats import ProbeTest

MIN_RETURNS = 10  # hit rows leaving the class needed to judge where they go
MAX_RETURN_SHARE = 0.5  # the share one class must stay under


def return_share(top: np.ndarray, hit: np.ndarray, cls: int) -> float:
    """The largest share of the rows ``hit`` (S,) bool that one class takes among those whose
    top class ``top`` (S,) under the probe is not ``cls``; NaN where fewer than
    ``MIN_RETURNS`` leave (too few to say where they go)."""
    gone = top[hit & (top != cls)]
    if len(gone) < MIN_RETURNS:
        return float("nan")
    return float(np.bincount(gone).max() / len(gone))


def goes_back(share: float) -> bool:
    """Whether a colour lead's hit rows go back to many classes (module docstring)."""
    return bool(share < MAX_RETURN_SHARE)  # NaN: not measured, or too few to say


def return_words(t: ProbeTest) -> str:
    """A near miss's words for where the colour lead ``t``'s rows go (`return_share`; "" where
    not measured)."""
    share = t.return_share
    if share != share:
        return ""
    return f"; its rows go to one class: {share:.2f} >= {MAX_RETURN_SHARE}"
