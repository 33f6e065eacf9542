"""``DIR/reliance.parquet``: the reliance test's candidates with their evidence.

One row per candidate (a region and a fill that knock out one predicted class), then one per
near miss (`fastfem.audit.reliance.rules.near_misses`: reported, never flagged), fixed schema,
written atomically like the store's other tables (`fastfem.audit.detectors.tables`)::

    candidate         int32    0, 1, ... (candidates most significant first, then near misses)
    status            string   "confirmed", or "not confirmed: " and what a near miss lacks
                               (e.g. "place lift 2.42 < 2.5", "not enough: transplant ...")
    predicted_class   int64    the class whose predictions the region carries
    region            string   e.g. "band y24-40", "border 2 px", "whole image"; a pair of
                               adjacent bands hidden one at a time (`probes.adjacent_pairs`):
                               "band y10-20 or band y15-25"
    region_kind       string   band, column, cell, border, centre, image, hot spot, band
                               pair, column pair, peak
    box               list<int32>  x0, y0, x1, y1 of the region (model-input pixels; a pair's:
                                   their union)
    fill              string   how the region was hidden (inpaint, or a global fill)
    sample_hits / sample_rows             the class's sampled rows knocked out / sampled
                                          (the peak probe's lead counted again: with the
                                          class's rows read for it, `peaks.is_lead`)
    other_hits / other_rows               the same for the other classes' sampled rows
    lift, place_lift, p_value             `fastfem.audit.reliance.stats` (the lift: over
                                          the median other class, of 3 or more)
    collapse          float64  the share of the class's sampled hit rows whose drop is >= 0.5
    only_here         bool     the sample's counts above are of the rows only this region
                               knocks out, none of its translates (`stats.only_here_hits`)
    transplant, transplant_null  float64  the share of the sample's rows of other classes the
                      region moves to the class, copied from the class's hit rows / from other
                      classes' rows (`rules.sufficient`); null for a global probe
    label_other, label_other_rest  float64  with labels: the share of the class's sampled
                      hit rows labelled another class, and of its other rows
                      (`labels.label_evidence`; what confirms a lead; the peak probe's at a
                      drop of 0.5, `peaks.peak_tests`): a near miss's, and
                      a candidate's only where the labels confirmed it (the lead's, at the
                      region it grew from); null otherwise
    fills             list<string>, fill_hit_rates list<float64>: the class's sampled rows
                      knocked out by each single fill (evidence)
    row_tau           float64  the drop that flags a member row (`thresholds.row_threshold`);
                               null for a near miss (its rows are not tested)
    member_rows, member_hits, member_mean_drop         every row of the class (stage 3; 0 for
                                                        a near miss)
    nonmember_rows, nonmember_hits, nonmember_mean_drop  the sample's other rows
    flagged           int64    rows flagged for this candidate
    same_rows_region, same_rows_overlap  string, float64  a global candidate's place where the
                      sample shows one: the region, passing every rule itself, that knocks
                      out most nearly the same sampled rows of the class, and the Jaccard
                      overlap of the two (`choice.Sweep.same_rows`; >= 0.5); null otherwise
    places            string   a region that places a global candidate (`choice.Sweep.place`):
                               that candidate's probe, e.g. "whole image (no red)"; null
                               otherwise
    lost_extra, lost_extra_rest  float64  the peak probe's: the share of the class's
                      sampled rows it would flag (drop >= 0.5) whose map lost a salient extra
                      with the window hidden (`peaks.lost_extra`), and the same share among
                      the sample's rows it would not flag (`peaks.maps_mark`); null for every
                      other probe
    neighbours        list<string>  a region whose flags over every row would not be clean:
                      the region moved by its own size each way, run on every member row
                      too; a row one of them knocks out is not flagged
                      (`choice.Sweep.neighbours`); empty otherwise
    member_spared     int64    member rows it knocked out that one of its neighbours knocked
                               out too (not flagged by it)
    return_share      float64  a colour lead that knocks out most of its class: the largest
                      share of its sampled hit rows that go to one other class once the colour
                      is taken away (`returns.return_share`: under 0.5, they go back to many
                      classes, a mark's; near 1, one kind of image, the class's own colour);
                      null otherwise

A store written before the last columns existed (`ADDED_COLUMNS`) reads as if they were null.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastfem.audit.detectors.tables import table_from_columns, write_table

RELIANCE_FILE = "reliance.parquet"


def reliance_schema():
    import pyarrow as pa

    f = pa.field
    return pa.schema(
        [
            f("candidate", pa.int32(), nullable=False),
            f("status", pa.string(), nullable=False),
            f("predicted_class", pa.int64(), nullable=False),
            f("region", pa.string(), nullable=False),
            f("region_kind", pa.string(), nullable=False),
            f("box", pa.list_(pa.int32()), nullable=False),
            f("fill", pa.string(), nullable=False),
            f("sample_hits", pa.int64(), nullable=False),
            f("sample_rows", pa.int64(), nullable=False),
            f("other_hits", pa.int64(), nullable=False),
            f("other_rows", pa.int64(), nullable=False),
            f("lift", pa.float64(), nullable=False),
            f("place_lift", pa.float64(), nullable=True),
            f("p_value", pa.float64(), nullable=False),
            f("collapse", pa.float64(), nullable=False),
            f("only_here", pa.bool_(), nullable=False),
            f("transplant", pa.float64(), nullable=True),
            f("transplant_null", pa.float64(), nullable=True),
            f("label_other", pa.float64(), nullable=True),
            f("label_other_rest", pa.float64(), nullable=True),
            f("fills", pa.list_(pa.string()), nullable=False),
            f("fill_hit_rates", pa.list_(pa.float64()), nullable=False),
            f("row_tau", pa.float64(), nullable=True),
            f("member_rows", pa.int64(), nullable=False),
            f("member_hits", pa.int64(), nullable=False),
            f("member_mean_drop", pa.float64(), nullable=False),
            f("nonmember_rows", pa.int64(), nullable=False),
            f("nonmember_hits", pa.int64(), nullable=False),
            f("nonmember_mean_drop", pa.float64(), nullable=False),
            f("flagged", pa.int64(), nullable=False),
            f("same_rows_region", pa.string(), nullable=True),
            f("same_rows_overlap", pa.float64(), nullable=True),
            f("places", pa.string(), nullable=True),
            f("lost_extra", pa.float64(), nullable=True),
            f("lost_extra_rest", pa.float64(), nullable=True),
            f("neighbours", pa.list_(pa.string()), nullable=True),
            f("member_spared", pa.int64(), nullable=True),
            f("return_share", pa.float64(), nullable=True),
        ]
    )


#: The columns added last, oldest first: a store written before some of them reads as if
#: they were null.
ADDED_COLUMNS: tuple[str, ...] = (
    "same_rows_region",
    "same_rows_overlap",
    "places",
    "lost_extra",
    "lost_extra_rest",
    "neighbours",
    "member_spared",
    "return_share",
)


def as_current(table: dict[str, list] | None) -> dict[str, list] | None:
    """``reliance.parquet`` read as a dict of columns, in the current schema: one written
    before some of `ADDED_COLUMNS` (its columns the current ones up to one of them) gets
    those as nulls; None for any other set of columns."""
    names = reliance_schema().names
    if table is None:
        return None
    given = list(table)
    missing = names[len(given) :]
    if given == names[: len(given)] and set(missing) <= set(ADDED_COLUMNS):
        rows = len(table["candidate"])
        table = {**table, **{n: [None] * rows for n in missing}}
    return table if list(table) == names else None


def reliance_columns(result: Any) -> dict[str, list]:
    """The columns of ``reliance.parquet`` for a `fastfem.audit.reliance.RelianceResult`."""
    names = reliance_schema().names
    cols: dict[str, list] = {n: [] for n in names}
    confirmed = len(result.candidates)
    for k, c in enumerate([*result.candidates, *result.near_misses]):
        t = c.test
        place = t.place_lift if t.place_lift != float("inf") else None
        row = {
            "candidate": k,
            "status": c.status,
            "predicted_class": c.cls,
            "region": c.probe.region.name,
            "region_kind": c.probe.region.kind,
            "box": list(c.probe.region.box),
            "fill": "+".join(c.probe.fills),
            "sample_hits": t.hits,
            "sample_rows": t.rows,
            "other_hits": t.other_hits,
            "other_rows": t.other_rows,
            "lift": float(t.lift),
            "place_lift": None if place is None else float(place),
            "p_value": float(t.p_value),
            "collapse": float(t.collapse),
            "only_here": bool(t.only_here),
            "transplant": _nullable(c.transplant),
            "transplant_null": _nullable(c.transplant_null),
            "label_other": _nullable(c.label_other),
            "label_other_rest": _nullable(c.label_other_rest),
            "fills": list(c.fill_effects),
            "fill_hit_rates": [float(v) for v in c.fill_effects.values()],
            "row_tau": float(c.row_tau) if k < confirmed else None,
            "member_rows": c.member_rows,
            "member_hits": c.member_hits,
            "member_mean_drop": c.member_mean_drop,
            "nonmember_rows": c.nonmember_rows,
            "nonmember_hits": c.nonmember_hits,
            "nonmember_mean_drop": c.nonmember_mean_drop,
            "flagged": sum(1 for j in result.candidate if j == k),
            "same_rows_region": c.same_rows_region or None,
            "same_rows_overlap": _nullable(c.same_rows_overlap),
            "places": c.places or None,
            "lost_extra": _nullable(c.lost_extra),
            "lost_extra_rest": _nullable(c.lost_extra_rest),
            "neighbours": [q.region.name for q in c.neighbours],
            "member_spared": c.member_spared,
            "return_share": _nullable(t.return_share),
        }
        for n in names:
            cols[n].append(row[n])
    return cols


def _nullable(value: float) -> float | None:
    """A float column's value: None for NaN (not measured)."""
    return None if value != value else float(value)


def write_reliance(root: str | os.PathLike, result: Any) -> Path:
    """Write ``root/reliance.parquet`` (module docstring) atomically."""
    table = table_from_columns(reliance_columns(result), reliance_schema())
    return write_table(Path(root) / RELIANCE_FILE, table)
