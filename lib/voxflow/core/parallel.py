"""The cohort-level CPU work on dask: one helper, so that every stage runs its tasks on the configured scheduler
(threads, processes, or the address of a running distributed scheduler)."""

from __future__ import annotations


def compute(tasks, scheduler: str):
    """dask.compute with the configured scheduler; an address means a running distributed scheduler."""
    import dask

    if "://" in scheduler or (":" in scheduler and scheduler not in ("threads", "processes", "synchronous")):
        from distributed import Client

        with Client(scheduler) as client:
            return list(client.gather(client.compute(tasks)))
    return list(dask.compute(*tasks, scheduler=scheduler))
