"""Client data: sklearn digits split non-IID with flwr-datasets (quick), FEMNIST and Shakespeare (full).

Every loader returns ``(partitions, test)``: ``partitions[i]`` is client ``i``'s ``(x, y)``
arrays, ``test`` the server's held-out ``(x, y)``. Partitioning is flwr-datasets' own: a
``DirichletPartitioner`` over an in-memory ``datasets.Dataset`` for digits (no download), a
``NaturalIdPartitioner`` by writer (FEMNIST) or speaking character (Shakespeare).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

Arrays = tuple[np.ndarray, np.ndarray]

SHAKESPEARE_VOCAB = " !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"


@lru_cache(maxsize=4)
def load(dataset: str, num_clients: int, alpha: float, split_seed: int, data_dir: str | None) -> tuple[list[Arrays], Arrays]:
    if dataset == "digits":
        return _digits(num_clients, alpha, split_seed)
    if dataset in ("femnist", "shakespeare"):
        return _natural(dataset, num_clients, data_dir)
    raise ValueError(f"unknown dataset {dataset!r}; allowed: digits, femnist, shakespeare")


def _digits(num_clients: int, alpha: float, split_seed: int) -> tuple[list[Arrays], Arrays]:
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, stratify=y, random_state=split_seed)
    partitioner = DirichletPartitioner(num_partitions=num_clients, partition_by="label", alpha=alpha,
                                       min_partition_size=5, seed=split_seed)
    partitioner.dataset = Dataset.from_dict({"x": x_tr, "label": y_tr})
    try:
        partitioner.load_partition(0)
    except ValueError as exc:  # flwr-datasets gives up after 10 draws; say which keys to change
        raise ValueError(f"the digits split cannot give each of num_clients={num_clients} clients 5 or more images "
                         f"with alpha={alpha} and split_seed={split_seed} (flwr-datasets: {exc}); use fewer clients, "
                         "a larger alpha or another split_seed") from None
    parts = []
    for i in range(num_clients):
        part = partitioner.load_partition(i).with_format("numpy")[:]
        parts.append((np.asarray(part["x"], dtype=np.float32), np.asarray(part["label"], dtype=np.int64)))
    return parts, (x_te, y_te.astype(np.int64))


def _natural(dataset: str, num_clients: int, data_dir: str | None) -> tuple[list[Arrays], Arrays]:
    """FEMNIST by writer / Shakespeare by character: the first ``num_clients`` ids train, a
    disjoint set of ids is the test set (10% of the ids, at least one)."""
    from flwr_datasets import FederatedDataset
    from flwr_datasets.partitioner import NaturalIdPartitioner

    name, by = {"femnist": ("flwrlabs/femnist", "writer_id"),
                "shakespeare": ("flwrlabs/shakespeare", "character_id")}[dataset]
    fds = FederatedDataset(dataset=name, partitioners={"train": NaturalIdPartitioner(partition_by=by)},
                           **({"data_dir": data_dir} if data_dir else {}))
    fds.load_partition(0)  # loads the split, so that the partitioner knows its ids
    total = fds.partitioners["train"].num_partitions
    if total < num_clients + 1:
        raise ValueError(f"{dataset} has {total} {by} partitions, fewer than num_clients + 1 = {num_clients + 1}")
    convert = _femnist_arrays if dataset == "femnist" else _shakespeare_arrays
    parts = [convert(fds.load_partition(i)) for i in range(num_clients)]
    test_ids = range(total - max(1, total // 10), total)
    xs, ys = zip(*(convert(fds.load_partition(i)) for i in test_ids), strict=True)
    return parts, (np.concatenate(xs), np.concatenate(ys))


def _femnist_arrays(part) -> Arrays:  # type: ignore[no-untyped-def]
    x = np.stack([np.asarray(img, dtype=np.float32) / 255.0 for img in part["image"]])[:, None]
    return x, np.asarray(part["character"], dtype=np.int64)


def _shakespeare_arrays(part) -> Arrays:  # type: ignore[no-untyped-def]
    index = {c: i for i, c in enumerate(SHAKESPEARE_VOCAB)}
    x = np.array([[index.get(c, 0) for c in s] for s in part["x"]], dtype=np.int64)
    y = np.array([index.get(c, 0) for c in part["y"]], dtype=np.int64)
    return x, y
