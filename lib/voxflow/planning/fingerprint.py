"""The dataset fingerprint (rule fingerprint -> model/fingerprint.json): what was measured on the training
subjects' stores (shapes, spacings, intensity percentiles per channel, class voxels), one dask task per store."""

from __future__ import annotations

from voxflow.core.parallel import compute


def _subject_stats(path: str, n_classes_max: int = 256, n_samples: int = 20000, seed: int = 0) -> dict:
    import numpy as np

    from voxflow.core.stores import open_store, read_store_image, read_store_label, read_store_mask, store_meta

    root = open_store(path)
    meta = store_meta(root)
    mask = read_store_mask(root) > 0
    rng = np.random.default_rng(seed)
    idx = np.argwhere(mask)
    if len(idx) > n_samples:
        idx = idx[rng.choice(len(idx), n_samples, replace=False)]
    data = read_store_image(root)
    samples = data[:, idx[:, 0], idx[:, 1], idx[:, 2]].astype(np.float32)
    counts = {}
    if meta.get("has_label"):
        lab = read_store_label(root)
        vals, cnt = np.unique(lab, return_counts=True)
        counts = {str(int(v)): int(c) for v, c in zip(vals, cnt)}
    return {"path": path, "shape": meta["shape_zyx"], "spacing": meta["spacing_zyx"],
            "samples": samples, "class_counts": counts, "brain_voxels": int(mask.sum())}


def fingerprint(stores: dict[str, str], scheduler: str = "threads") -> dict:
    """Measure the training set, one dask task per subject (scheduler: threads, processes, or an address)."""
    import dask
    import numpy as np

    tasks = [dask.delayed(_subject_stats)(p) for p in stores.values()]
    results = compute(tasks, scheduler)
    per_channel = np.concatenate([r["samples"] for r in results], axis=1)
    pct = {str(q): np.percentile(per_channel, q, axis=1).round(4).tolist() for q in (0.5, 50, 99.5)}
    counts: dict[str, int] = {}
    for r in results:
        for k, v in r["class_counts"].items():
            counts[k] = counts.get(k, 0) + v
    shapes = np.array([r["shape"] for r in results])
    spacings = np.array([r["spacing"] for r in results])
    return {
        "subjects": list(stores),
        "shapes": shapes.tolist(), "spacings": spacings.tolist(),
        "median_shape": np.median(shapes, axis=0).astype(int).tolist(),
        "median_spacing": np.median(spacings, axis=0).tolist(),
        "intensity": {"percentiles": pct, "mean": per_channel.mean(1).round(4).tolist(),
                      "std": per_channel.std(1).round(4).tolist()},
        "class_voxels": dict(sorted(counts.items(), key=lambda kv: int(kv[0]))),
        "brain_voxels_median": int(np.median([r["brain_voxels"] for r in results])),
    }
