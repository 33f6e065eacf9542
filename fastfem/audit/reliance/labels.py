"""What a sample's labels say about a lead of the reliance test (`fastfem.audit.reliance.rules`):
the share of its hit rows labelled another class (`label_evidence`), whether that confirms it,
disowns it or says nothing (`labels_verdict`), and the rows a confirmed lead may flag
(`labelled_other`). Host, NumPy.

A mark moves images of *other* classes to its class (what the ground truth of a shortcut
asks); a class's own colour or objects knock out images of the class. So when the audit has
labels (each label matched to the prediction most of its rows get), a lead is a candidate
when at least ``MIN_LABEL_OTHER`` (0.5) of its hit rows are labelled another class, and
``LABEL_OTHER_LIFT`` (2) times the share among the class's other rows (`labels_confirm`; a
model that often mistakes one class for another puts rows of other labels in every class, the
hit rows must stand out from them); it then flags only the rows of the class labelled another
class that it knocks out. Fewer than ``MIN_LABEL_OTHER`` labelled another class disown it (its
hit rows are the class's own images); between the two the labels say nothing
(`labels_verdict`). Measured on the shortcut benchmark's stored sweeps (both splits, 74
audits): the colour leads of planted marks have 0.68-1.00 of their hit rows labelled another
class, against 0.05-0.33 of the class's other rows (the photos' red line excepted: 0.69-0.78
against 0.61-0.73: its model puts many rows of other labels in that class, and the labels say
nothing); the colour tests of the bases' own objects, 0.00-0.50. Of the 33 tests of other
probes at 0.8 of every floor that are no candidate, the 15 the labels confirm are all of
planted marks (0.60-1.00 against 0.00-0.22); the 8 of objects have 0.00-0.09 of their hit rows
labelled another class.
"""

from __future__ import annotations

import numpy as np

from fastfem.audit.reliance.stats import ProbeTest, hit_rows

#: A lead is a candidate when the audit has labels and at least this share of its hit rows
#: are labelled another class than the one they are predicted ...
MIN_LABEL_OTHER = 0.5
#: ... and this many times the share among the class's other rows.
LABEL_OTHER_LIFT = 2.0


def label_evidence(
    t: ProbeTest,
    drop: np.ndarray,
    dose: np.ndarray | None,
    pred: np.ndarray,
    labels: np.ndarray,
) -> tuple[float, float]:
    """For the test ``t``: the share of its hit rows (the class's rows its probe knocks out;
    a global probe's, ``dose`` given, only its dosed rows, `stats.global_test`) whose label is
    matched to another class than ``t.cls``, and the same share among the class's other rows,
    over the rows with a label (``labels`` (N,): each sampled row's label's class, -1 without
    one; NaN where none has one; `label_shares`)."""
    return label_shares(hit_rows(t, drop, pred, dose), pred == t.cls, labels, t.cls)


def label_shares(
    hits: np.ndarray, own: np.ndarray, labels: np.ndarray, cls: int
) -> tuple[float, float]:
    """The share of the rows ``hits & own`` whose label (``labels`` (N,): the label's class,
    -1 without one) is another class than ``cls``, and the same share among the rows of
    ``own`` not hit, over the rows with a label; NaN where none has one."""
    mine = own & (labels >= 0)
    hit, rest = mine & hits, mine & ~hits
    other = labels != cls
    share = float(np.mean(other[hit])) if hit.any() else float("nan")
    return share, float(np.mean(other[rest])) if rest.any() else float("nan")


def labelled_other(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) each row's predicted class where its label (``labels`` (N,): the label's class, -1
    without one) is another class, else -1: the rows a lead the labels confirm may flag
    (`rules.needs_labels`), on which it is grown and given its row threshold (`rules`)."""
    return np.where((labels >= 0) & (labels != pred), pred, -1)


def labels_confirm(share: float, share_rest: float) -> bool:
    """Whether a lead's rows are moved by a mark, by their labels (module docstring):
    at least ``MIN_LABEL_OTHER`` of its hit rows are labelled another class, and at least
    ``LABEL_OTHER_LIFT`` times the share among the class's other rows."""
    rest = share_rest if share_rest == share_rest else 0.0  # NaN: no other labelled row
    return share >= MIN_LABEL_OTHER and share >= LABEL_OTHER_LIFT * rest


def labels_verdict(share: float, share_rest: float) -> bool | None:
    """The labels' word on a lead: True where they confirm it (`labels_confirm`), False
    where they disown it (fewer than ``MIN_LABEL_OTHER`` of its hit rows labelled another
    class: the class's own images), else None (no labelled hit row, or the class's other
    rows as often labelled another class: a model that mixes classes)."""
    if labels_confirm(share, share_rest):
        return True
    return False if share < MIN_LABEL_OTHER else None
