"""A resumed fold draws the batches an uninterrupted one draws (voxflow.nn.sampler): the regression the fault
tests found (tests/workflow/test_faults.py kills the workflow during training and compares the weights)."""

from __future__ import annotations

import torch


def test_resumed_sampler_continues_the_stream(tmp_path):
    """The patch stream resumed at batch k is the uninterrupted stream from batch k on, whatever the
    number of DataLoader workers (it was reseeded per resume epoch and worker: a fold resumed after a
    kill trained on other batches and ended with other weights)."""
    from support.learning import synthetic_label, write_store
    from voxflow.nn.sampler import PatchBatches, make_loader

    stores = [str(write_store(tmp_path / f"s{i}.zarr", synthetic_label(seed=i), seed=i)) for i in range(2)]

    def batches(start: int, n: int, workers: int = 0):
        ds = PatchBatches(stores, [16, 16, 16], batch_size=3, fg_fraction=1 / 3, label_values=[0, 1, 2, 4], seed=5)
        ds.start = start
        it = iter(make_loader(ds, workers))
        return [next(it) for _ in range(n)]

    whole = batches(0, 6)
    assert any(not torch.equal(whole[0][0], b[0]) for b in whole[1:])
    for got, want in zip(batches(4, 2) + batches(0, 6, workers=2), whole[4:] + whole):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
