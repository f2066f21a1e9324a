"""pandas DataFrames: one row per step, tensor fields flattened to ``observation[0]``, ``observation[1]``...

The column names are the filter language's own (``F.observation[2]``), so a frame reads like a
filter. ``from_frame`` folds such columns back into tensors (one dimension).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from tuplehub.client.errors import require

_ELEMENT = re.compile(r"^(?P<name>.+)\[(?P<index>\d+)\]$")


def to_frame(arrays: Mapping[str, np.ndarray]) -> Any:
    pd = require("pandas", extra="pandas", feature="to_pandas()")

    columns: dict[str, np.ndarray] = {}
    for name, values in arrays.items():
        values = np.asarray(values)
        if values.ndim == 1:
            columns[name] = values
            continue
        flat = values.reshape(len(values), -1)
        for index in range(flat.shape[1]):
            columns[f"{name}[{index}]"] = flat[:, index]
    return pd.DataFrame(columns)


def from_frame(frame: Any) -> dict[str, np.ndarray]:
    """A frame (as :func:`to_frame` writes it) as per-step arrays for ``Dataset.upload``."""
    arrays: dict[str, np.ndarray] = {}
    parts: dict[str, dict[int, np.ndarray]] = {}
    for column in frame.columns:
        match = _ELEMENT.match(str(column))
        if match:
            parts.setdefault(match["name"], {})[int(match["index"])] = frame[column].to_numpy()
        else:
            arrays[str(column)] = frame[column].to_numpy()
    for name, elements in parts.items():
        arrays[name] = np.stack([elements[i] for i in sorted(elements)], axis=1)
    return arrays
