"""The detectors stream the store's maps: their peak memory does not grow with the maps'
bytes (`benchmarks.detect_scale`, which measures a 1,000,000-row store the same way)."""

from __future__ import annotations

from benchmarks.detect_scale import scale_row


def test_detect_peak_memory_does_not_grow_with_the_maps():
    """20,000 vs 80,000 rows of 32x32 maps: the larger store holds ~234 MiB more maps; a
    detector holding them all would add at least that to its peak. Streaming, the peak grows
    only by the per-row columns (ids, predictions, scores: ~0.5 KB a row, 20-33 MiB here; the
    bound, half the added maps, leaves room for the allocator's run-to-run noise, tens of MiB
    on a loaded machine), and the detectors still find the planted rows at both sizes."""
    small = scale_row(20_000, size=32)
    large = scale_row(80_000, size=32)
    added_maps = large["maps_mb"] - small["maps_mb"]
    assert added_maps > 200, (small, large)
    growth = large["peak_rss_mb"] - small["peak_rss_mb"]
    assert growth < 0.5 * added_maps, (growth, added_maps, small, large)
    # the detectors' own share (over the rows held in memory) grows by their per-row arrays
    detectors_growth = large["detectors_rss_mb"] - small["detectors_rss_mb"]
    assert detectors_growth < 0.5 * added_maps, (detectors_growth, added_maps, small, large)
    for res in (small, large):
        assert res["recall"] >= 0.95 and res["precision"] >= 0.9, res
