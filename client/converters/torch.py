"""PyTorch: a map-style ``Dataset`` over exported arrays, and an iterable that streams an export.

``TransitionDataset`` holds an export in memory and indexes transitions; ``TransitionStream``
decodes an export's Arrow stream record batch by record batch (as the server wrote them), so a
dataset larger than memory trains with ``DataLoader(stream, batch_size=None)``. Both yield dicts
of tensors named like the columns, tensors in their stored shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from tuplehub.client.exports import Export
from tuplehub.storage.schema import column_to_numpy, spec_of_field


def _tensor(values: np.ndarray) -> torch.Tensor:
    if values.dtype == np.bool_:
        return torch.from_numpy(values.astype(np.float32))
    if not values.flags.writeable or not values.flags.c_contiguous:  # zero-copy views of Arrow memory
        values = np.array(values, order="C")
    return torch.from_numpy(values)


class TransitionDataset(Dataset[dict[str, torch.Tensor]]):
    """Transitions of an export (``Export.to_numpy()``), one dict of tensors per index."""

    def __init__(self, arrays: Mapping[str, np.ndarray], columns: tuple[str, ...] | None = None) -> None:
        names = columns or tuple(name for name in arrays if name != "episode_id" or arrays[name].dtype != object)
        self.columns = {name: _tensor(np.asarray(arrays[name])) for name in names}
        self.length = len(next(iter(self.columns.values())))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: values[index] for name, values in self.columns.items()}


class TransitionStream(IterableDataset[dict[str, torch.Tensor]]):
    """Batches of an export as dicts of tensors, decoded while they download.

    ``export`` is an :class:`Export` or a function that starts one (so each epoch can stream
    afresh; a finished export is reused by the server, nothing is recomputed).
    """

    def __init__(self, export: Export | Callable[[], Export], *, batch_size: int = 1024) -> None:
        self._export = export
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        export = self._export() if callable(self._export) and not isinstance(self._export, Export) else self._export
        for batch in export.iter_batches(batch_size=self.batch_size):
            out = {}
            for field in batch.schema:
                spec = spec_of_field(field)
                if spec.dtype != "object":  # string episode ids have no tensor form
                    out[field.name] = _tensor(column_to_numpy(batch.column(field.name), spec))
            yield out
