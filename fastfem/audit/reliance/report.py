"""The report's reliance section: each candidate with its evidence and its flagged rows, and
the near misses with what each lacks.

Built with the report's one escaping helper (`fastfem.audit.report.markup.render`): every value read
from ``reliance.parquet`` and ``flags.parquet`` is escaped there.
"""

from __future__ import annotations

from pathlib import Path

from fastfem.audit.detectors.tables import read_table
from fastfem.audit.reliance.table import RELIANCE_FILE, as_current
from fastfem.audit.report.markup import Markup, join, render

ROWS_SHOWN = 12  # flagged ids listed per candidate

_CANDIDATE = """<section class="candidate"><h3>Class {cls} relies on {region} ({fill})</h3>
<table>
<tr><th>region (x0, y0, x1, y1)</th><td>{kind} {box}</td></tr>
<tr><th>sample: class's rows knocked out</th><td>{hits} of {rows} ({rate:.0%})</td></tr>
<tr><th>sample: other classes' rows knocked out</th><td>{ohits} of {orows} ({orate:.0%})</td></tr>
<tr><th>lift over other classes / over its translates</th><td>{lift:.1f} / {place}</td></tr>
<tr><th>p-value</th><td>{p:.2g}</td></tr>
<tr><th>collapse: its knocked-out rows that fell by &ge; 0.5</th><td>{collapse:.0%}</td></tr>
<tr><th>transplant: other classes' sampled rows moved to the class by the region copied from
the class's knocked-out rows / from other classes' rows</th><td>{transplant}</td></tr>
<tr><th>class's sampled rows knocked out, by fill</th><td>{fills}</td></tr>
<tr><th>members (every row of the class): mean drop, knocked out (drop &ge; {rtau:g})</th>
<td>{mdrop:.3f}, {mhits} of {mrows}</td></tr>
<tr><th>non-members (the sample's other rows): mean drop, knocked out</th>
<td>{ndrop:.3f}, {nhits} of {nrows}</td></tr>
<tr><th>rows flagged</th><td>{flagged}</td></tr>{maps}{labels}{where}{alone}{back}
</table>
<p>Flagged rows, largest output change first: {ids}</p></section>"""


_NEAR_HEAD = """<h3>Near misses: suggested by the sample, not confirmed (no row flagged)</h3>
<table><tr><th>class</th><th>region (fill)</th><th>class's sampled rows knocked out</th>
<th>other classes'</th><th>lift / over its translates</th><th>collapse</th>
<th>transplant / null</th><th>what it lacks</th></tr>"""

_NEAR_ROW = """<tr><td>{cls}</td><td>{region} ({fill})</td><td>{hits} of {rows}</td>
<td>{ohits} of {orows}</td><td>{lift:.1f} / {place}</td><td>{collapse:.0%}</td>
<td>{transplant}</td><td>{status}</td></tr>"""


def _fills(names: list, rates: list) -> Markup:
    return join((render("{n} {r:.0%}", n=n, r=r) for n, r in zip(names, rates, strict=True)), "; ")


_LABELS = """
<tr><th>labels: the class's knocked-out sampled rows labelled another class / its other
rows</th><td>{share:.0%} / {rest} &mdash; a lead the labels confirm: only rows labelled another
class are flagged</td></tr>"""


def _labels(share: float | None, rest: float | None) -> Markup | str:
    """A candidate's labels row: only for one the labels confirmed (`rules.needs_labels`;
    ``reliance.parquet`` holds its shares), else nothing."""
    if share is None:
        return ""
    return render(_LABELS, share=share, rest="–" if rest is None else f"{rest:.0%}")


_MAPS = """
<tr><th>maps: the class's knocked-out sampled rows whose map lost a salient extra with the
window hidden (its peak contrast fell to an ordinary map's) / the sample's other
rows</th><td>{extra:.0%} / {rest:.0%}</td></tr>"""


def _maps(extra: float | None, rest: float | None) -> Markup | str:
    """The peak probe's maps row (`peaks.lost_extra`; ``reliance.parquet`` holds its
    shares), else nothing."""
    return "" if extra is None or rest is None else render(_MAPS, extra=extra, rest=rest)


_SAME_ROWS = """
<tr><th>where: the region that knocks out most nearly the same sampled rows (overlap)</th>
<td>{region} ({overlap:.0%})</td></tr>"""


_PLACES = """
<tr><th>what: the global candidate this region places (it knocks out most of that one's rows,
few of the class's others)</th><td>{places}</td></tr>"""


_ALONE = """
<tr><th>alone: its region moved by its own size each way, also run on every row of the class;
a row one of them knocks out too (the class's own object, larger than the gap) is not
flagged</th>
<td>{names}: {spared} rows spared</td></tr>"""


_BACK = """
<tr><th>back: its sampled knocked-out rows, the colour taken away, go to other classes; the
largest share one class takes (under 50%: back to many classes, a mark planted on all of them,
not the class's own colour)</th><td>{share:.0%}</td></tr>"""


def _back(share: float | None) -> Markup | str:
    """A colour candidate's return row (`returns.return_share`), else nothing."""
    return "" if share is None else render(_BACK, share=share)


def _alone(names: list | None, spared: int | None) -> Markup | str:
    """A region's neighbours row (`choice.Sweep.neighbours`), else nothing."""
    if not names:
        return ""
    return render(_ALONE, names=", ".join(names), spared=spared or 0)


def _where(region: str | None, overlap: float | None, places: str | None = None) -> Markup | str:
    """A global candidate's place row (`choice.Sweep.same_rows`), or the global candidate a
    region places (`choice.Sweep.place`), else nothing."""
    if places:
        return render(_PLACES, places=places)
    if not region:
        return ""
    return render(_SAME_ROWS, region=region, overlap=overlap)


def _ids(flags: dict[str, list], region: str) -> Markup:
    rows = [
        (c, i)
        for i, r, c in zip(flags["id"], flags["region"], flags["output_change"], strict=True)
        if r == region and c is not None
    ]
    rows.sort(key=lambda t: -t[0])
    shown = join((render("{i} ({c:.2f})", i=i, c=c) for c, i in rows[:ROWS_SHOWN]), ", ")
    more = render(" and {n} more", n=len(rows) - ROWS_SHOWN) if len(rows) > ROWS_SHOWN else ""
    return render("{s}{m}", s=shown or "none", m=more)


def reliance_section(root: str | Path, flags: dict[str, list], summary: str) -> Markup:
    """The section: what the test did (``summary``, the manifest's line), one block per
    candidate of ``root/reliance.parquet`` and a table of its near misses."""
    table = as_current(read_table(root, RELIANCE_FILE))
    if table is None:
        return render("<p>No reliance test in this store ({s}).</p>", s=summary or "not run")
    blocks, near = [], []
    for k in range(len(table["candidate"])):
        t = {name: table[name][k] for name in table}
        shared = {  # what a candidate's block and a near miss's row both show
            "cls": t["predicted_class"],
            "region": t["region"],
            "fill": t["fill"],
            "hits": t["sample_hits"],
            "rows": t["sample_rows"],
            "ohits": t["other_hits"],
            "orows": t["other_rows"],
            "lift": t["lift"],
            "place": "–" if t["place_lift"] is None else f"{t['place_lift']:.1f}",
            "collapse": t["collapse"],
            "transplant": "– (a global probe or not asked)"
            if t["transplant"] is None
            else f"{t['transplant']:.0%} / {t['transplant_null']:.0%}",
        }
        if t["status"] != "confirmed":
            status = t["status"].removeprefix("not confirmed: ")
            near.append(render(_NEAR_ROW, **shared, status=status))
            continue
        blocks.append(
            render(
                _CANDIDATE,
                **shared,
                kind=t["region_kind"],
                box=tuple(t["box"]) if t["region_kind"] != "peak" else "(its own on each row)",
                rate=t["sample_hits"] / max(t["sample_rows"], 1),
                orate=t["other_hits"] / max(t["other_rows"], 1),
                p=t["p_value"],
                fills=_fills(t["fills"], t["fill_hit_rates"]),
                rtau=t["row_tau"],
                mdrop=t["member_mean_drop"],
                mhits=t["member_hits"],
                mrows=t["member_rows"],
                ndrop=t["nonmember_mean_drop"],
                nhits=t["nonmember_hits"],
                nrows=t["nonmember_rows"],
                flagged=t["flagged"],
                maps=_maps(t["lost_extra"], t["lost_extra_rest"]),
                labels=_labels(t["label_other"], t["label_other_rest"]),
                where=_where(t["same_rows_region"], t["same_rows_overlap"], t["places"]),
                alone=_alone(t["neighbours"], t["member_spared"]),
                back=_back(t["return_share"]),
                ids=_ids(flags, t["region"]) if "region" in flags else "",
            )
        )
    misses = [render(_NEAR_HEAD), *near, render("</table>")] if near else []
    if not blocks:
        none = render(
            "<p>{s}. No region is confirmed to knock out one class's predictions.</p>",
            s=summary or "no candidate",
        )
        return join([none, *misses])
    return join([render("<p>{s}.</p>", s=summary or ""), *blocks, *misses])


def describe_section() -> str:
    """The paragraph under the section's title (constant text)."""
    return (
        "Regions whose removal (filled from their surroundings) knocks out one predicted "
        "class's predictions far more often than the other classes' and than the same region "
        "elsewhere, and which, copied into images of other classes, moves them to the class: "
        "the model decides by what is there. Tested on a sample, then on every row of the "
        "class."
    )
