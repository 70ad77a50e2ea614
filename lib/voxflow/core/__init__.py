"""What every stage shares and no stage owns: the output layout (every path under output_dir and in a model
folder), atomic writes, the store reader, the metrics (one Dice, one HD95), the label scheme, the split and the
dask helper. Imports nothing of the stage packages."""
