"""The result store: Parquet parts written atomically and safely, the manifest, the writer lock."""
