"""Cohort-level CPU stages on a dask distributed cluster reached by its address (config `dask.scheduler`),
as a user would point voxflow at a LocalCluster or a dask-jobqueue SLURMCluster: same results as the
threaded scheduler, and the tasks really ran on the cluster's worker processes."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from support.learning import synthetic_label, write_store
from voxflow.planning.fingerprint import fingerprint
from voxflow.core.parallel import compute

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    # two worker processes on loopback: tasks must be pickled and shipped, as on a real cluster
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, worker_dashboard_address=None) as lc:
        yield lc


def _worker_pid(_):
    return os.getpid()


def test_address_scheduler_runs_on_the_cluster_workers(cluster):
    assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    import dask

    pids = set(compute([dask.delayed(_worker_pid)(i) for i in range(8)], cluster.scheduler_address))
    worker_pids = {w.pid for w in cluster.workers.values()}
    assert pids and pids <= worker_pids and os.getpid() not in pids


def test_fingerprint_through_the_scheduler_address_equals_threads(cluster, tmp_path):
    stores = {f"s{i}": str(write_store(tmp_path / f"s{i}.zarr", synthetic_label(seed=i), seed=i)) for i in range(3)}
    local = fingerprint(stores, scheduler="threads")
    remote = fingerprint(stores, scheduler=cluster.scheduler_address)
    assert remote == local
    assert remote["subjects"] == ["s0", "s1", "s2"] and sum(remote["class_voxels"].values()) > 0


def test_metric_aggregation_through_the_scheduler_address(cluster, tmp_path):
    from voxflow.evaluation.evaluate import aggregate, chunk_id, write_tsv
    from voxflow.core.metrics import evaluate_case

    pattern = str(tmp_path / "chunk_{chunk}.tsv")  # the chunk tables as the evaluate rule names them
    for i in range(3):
        ref = synthetic_label(seed=i)
        pred = np.roll(ref, i, axis=0)  # subject i: shifted by i voxels (subject 0 perfect)
        rows = [{"subject": f"s{i}", "space": "native", **r}
                for r in evaluate_case(pred, ref, (2.0, 2.0, 2.0), labels=[1, 2, 4], tolerance_mm=2.0)]
        write_tsv(pd.DataFrame(rows), pattern.format(chunk=chunk_id(i)))
    outs = {}
    for name, sched in (("threads", "threads"), ("remote", cluster.scheduler_address)):
        out = {"metrics": str(tmp_path / f"{name}_all.tsv"), "summary": str(tmp_path / f"{name}_summary.tsv")}
        info = aggregate("cohort", {}, out, {"scheduler": sched, "table_pattern": pattern, "n_chunks": 3})
        outs[name] = (info, pd.read_csv(out["summary"], sep="\t"), pd.read_csv(out["metrics"], sep="\t"))
    (info_t, summ_t, all_t), (info_r, summ_r, all_r) = outs["threads"], outs["remote"]
    assert info_r == info_t and info_r["subjects"] == 3
    pd.testing.assert_frame_equal(summ_r, summ_t)
    pd.testing.assert_frame_equal(all_r, all_t)
    # subject 0 is perfect, the others are not: the mean Dice of label 2 lies strictly between
    d = all_r[(all_r.label.astype(str) == "2")].set_index("subject")["dice"]
    assert d["s0"] == pytest.approx(1.0) and d["s2"] < d["s1"] < 1.0
