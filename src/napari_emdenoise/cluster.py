"""Batches on a dask.distributed cluster: a LocalCluster of single-threaded worker processes, or a running scheduler.

One task per file (:func:`napari_emdenoise.batch.denoise_file`), and one per chunk for a huge file
(above :data:`.io.LARGE_PX` pixels, or a zarr store: its lazy graph is computed on the cluster, the
workers loading the model file once each); the model is scattered to every worker once; a file whose worker is lost is run again elsewhere (dask's scheduler does that up to
``distributed.scheduler.allowed-failures`` times) and a file that still fails is reported with its
error while the rest go on. Inputs and outputs must lie on a file system the workers share.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator


class ClusterError(RuntimeError):
    """The cluster could not be started or reached."""


def parse(spec: str) -> tuple[str, int | str]:
    """'local' / 'local:N' -> ('local', N); 'tcp://host:port' (or tls://, ws://) -> ('address', spec)."""
    if spec == "local" or spec.startswith("local:"):
        n = spec.partition(":")[2]
        if not n:
            return "local", max(1, os.cpu_count() or 1)
        if not n.isdigit() or int(n) < 1:
            raise ClusterError(f"--cluster local:N needs a number of workers of at least 1, not {n!r}")
        return "local", int(n)
    if "://" in spec:
        return "address", spec
    raise ClusterError(f"--cluster must be 'local', 'local:N' or a scheduler address such as tcp://HOST:8786, not {spec!r}")


def client_for(spec: str):
    """A distributed Client for ``spec`` (a LocalCluster is closed with the client)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ClusterError("--cluster needs dask.distributed: pip install 'dask[distributed]'") from None
    kind, value = parse(spec)
    try:
        if kind == "local":
            threads = max(1, (os.cpu_count() or 1) // value)
            saved = _thread_env()
            try:
                cluster = LocalCluster(n_workers=value, threads_per_worker=1, processes=True, dashboard_address=None,
                                       env={"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
            finally:  # the nannies set the workers' thread limits in this process's environment too: undo that here
                _restore(saved)
            client = Client(cluster)
            client._emdenoise_cluster = cluster
            client._emdenoise_env = saved
            return client
        return Client(value, timeout="20s")
    except OSError as exc:
        raise ClusterError(f"could not reach the dask scheduler at {value}: {exc}") from None


_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_")


def _thread_env() -> dict:
    return {k: os.environ.get(k) for k in _THREAD_VARS}


def _restore(saved: dict) -> None:
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def denoise_files(spec: str, inputs: list[Path], out_dir: Path, model, opts) -> Iterator:
    """Denoise ``inputs`` on the cluster ``spec``; yields each file's :class:`~napari_emdenoise.batch.FileResult` as it
    completes (with a progress bar on stderr). Interrupting the iteration cancels what is left."""
    from distributed import as_completed
    from tqdm import tqdm

    from .batch import FileResult, denoise_file, is_large, outputs_for, remove_partials
    from .inference import DEFAULT_MODEL, resolve_model

    large = {p: is_large(Path(p)) for p in inputs}
    outputs = [t for p in inputs for t in outputs_for(Path(p), Path(out_dir), opts.check, large[p])]
    client = client_for(spec)
    futures = {}
    try:
        workers = len(client.scheduler_info()["workers"])
        threads = max(1, (os.cpu_count() or 1) // max(1, workers)) if parse(spec)[0] == "local" else None
        if threads:
            client.run(_set_threads, threads)
        small = [p for p in inputs if not large[p]]
        if small:
            net = client.scatter(resolve_model(model), broadcast=True)  # each worker receives the model once
        for i, path in enumerate(small):
            fut = client.submit(denoise_file, str(path), str(out_dir), net, opts, key=f"emdenoise-{i}-{path.name}",
                                pure=False)
            futures[fut] = path
        with tqdm(total=len(inputs), desc=f"{len(inputs)} file(s) on {workers} worker(s)", unit="file", disable=None) as bar:
            # huge files chunk by chunk on the cluster (this client is dask's scheduler here) while the rest run
            for path in (p for p in inputs if large[p]):
                yield denoise_file(path, out_dir, str(model or DEFAULT_MODEL), opts)
                bar.update(1)
            for fut in as_completed(futures):
                path = futures[fut]
                try:
                    res = fut.result()
                except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker after the retries: report, go on
                    res = FileResult(str(path), error=f"{type(exc).__name__} on the cluster: {exc}")
                bar.update(1)
                yield res
    finally:
        for fut in futures:
            fut.cancel()
        cluster = getattr(client, "_emdenoise_cluster", None)
        client.close()
        if cluster is not None:
            cluster.close()
            _restore(client._emdenoise_env)
        # a worker killed while writing leaves its temporary file; its task ran again elsewhere
        remove_partials(outputs)
