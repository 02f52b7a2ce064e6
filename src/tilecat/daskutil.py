"""Which Dask scheduler a stage computes with (config ``dask``), as a context manager.

``threads`` (default)
    The threaded scheduler with ``dask.workers`` threads: no start-up cost, right for
    one tile per job on a laptop or a cluster node.
``synchronous``
    Single-threaded, in the calling thread (debugging, profiling).
``local``
    A ``distributed.LocalCluster`` of ``dask.workers`` single-threaded worker
    processes, closed on exit.
``distributed``
    A ``distributed.Client`` connected to the scheduler at ``dask.address`` (e.g. one
    started inside a SLURM allocation); the cluster is left running on exit.
``slurm``
    A ``dask_jobqueue.SLURMCluster`` of ``dask.workers`` single-core jobs (needs the
    ``dask-jobqueue`` package; job options from ``dask.jobqueue``), closed on exit;
    the block starts once the first worker has joined.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from .errors import ConfigError

__all__ = ["dask_context", "SCHEDULERS", "settled_compute", "slurm_cluster_kwargs"]

SCHEDULERS: tuple[str, ...] = ("threads", "synchronous", "local", "distributed", "slurm")


def slurm_cluster_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster`` for scheduler ``slurm``:
    single-core 4 GB jobs without a dashboard, updated with ``dask.jobqueue``
    (e.g. ``queue``, ``walltime``, ``memory``, ``account``, ``job_extra_directives``)."""
    opts = config.get("dask") or {}
    kwargs: dict[str, Any] = {"cores": 1, "processes": 1, "memory": "4GB",
                              "scheduler_options": {"dashboard_address": None}}
    kwargs.update(opts.get("jobqueue") or {})
    return kwargs


@contextlib.contextmanager
def dask_context(config: dict[str, Any]) -> Iterator[Any]:
    """Make the configured scheduler the default for ``dask.compute`` inside the block.

    Parameters
    ----------
    config : dict
        Validated configuration; reads ``config["dask"]`` (``scheduler``, ``workers``,
        ``address``), defaults when absent.

    Yields
    ------
    distributed.Client or None
        The client for ``local``, ``distributed`` and ``slurm``; None otherwise.

    Raises
    ------
    ConfigError
        Unknown scheduler, ``distributed`` without an address, ``slurm`` without
        dask-jobqueue.
    """
    import dask

    opts = config.get("dask") or {}
    scheduler = opts.get("scheduler", "threads")
    workers = int(opts.get("workers", 2))
    if scheduler == "threads":
        with dask.config.set(scheduler="threads", num_workers=workers):
            yield None
    elif scheduler == "synchronous":
        with dask.config.set(scheduler="synchronous"):
            yield None
    elif scheduler == "local":
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            yield client
    elif scheduler == "distributed":
        address = opts.get("address")
        if not address:
            raise ConfigError("key 'dask.address': scheduler 'distributed' needs the address "
                              "of a running Dask scheduler (e.g. tcp://host:8786)")
        from distributed import Client

        with Client(address) as client:
            yield client
    elif scheduler == "slurm":
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError as exc:
            raise ConfigError(
                "key 'dask.scheduler': 'slurm' needs the dask-jobqueue package "
                "(pip install dask-jobqueue), or start a scheduler in the allocation and use "
                "scheduler 'distributed' with its address"
            ) from exc
        from distributed import Client

        with SLURMCluster(**slurm_cluster_kwargs(config)) as cluster, \
                Client(cluster) as client:
            cluster.scale(workers)
            client.wait_for_workers(1, timeout=float(opts.get("timeout", 600)))
            yield client
    else:
        raise ConfigError(f"key 'dask.scheduler': unknown scheduler {scheduler!r}; "
                          f"known: {list(SCHEDULERS)}")


def settled_compute(*collections: Any) -> tuple[Any, ...]:
    """``dask.compute`` that returns or raises only once no task is running any more.

    ``dask.compute`` raises as soon as one task fails, while the other workers may
    still be writing chunks; a caller that then removes its scratch directory would
    race them and leave files behind. Here a failure is re-raised after the tasks in
    flight have finished (threaded scheduler: a private pool shut down with
    ``wait=True``; distributed: ``distributed.wait`` on every future).

    Parameters
    ----------
    *collections
        Dask collections (or plain objects), as for ``dask.compute``.

    Returns
    -------
    tuple
        The computed results, in order.
    """
    import dask
    import dask.threaded
    from dask.base import get_scheduler

    get = get_scheduler(collections=list(collections))
    if get is dask.threaded.get:
        from concurrent.futures import ThreadPoolExecutor

        workers = dask.config.get("num_workers", None) or os.cpu_count() or 1
        pool = ThreadPoolExecutor(int(workers))
        try:
            return dask.compute(*collections, pool=pool)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    client = getattr(get, "__self__", None)
    if client is not None and hasattr(client, "compute"):
        from distributed import wait

        futures = client.compute(list(collections))
        try:
            return tuple(client.gather(futures))
        except BaseException:
            wait(futures)
            raise
    return dask.compute(*collections)
