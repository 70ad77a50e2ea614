"""Per-subject preprocessing stages: ingest, co-registration, N4, skull stripping, MNI, normalization, zarr."""
