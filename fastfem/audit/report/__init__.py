"""The audit's HTML report: the page, escaped markup only, thumbnails."""
