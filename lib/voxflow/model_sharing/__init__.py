"""One model outside Snakemake: `voxflow export-model` (archive), `voxflow predict` (predict) and the matching of a
scan's files to the model's modalities (inputs)."""
