"""Action entropy: how varied a dataset's discrete actions are, from their empirical distribution."""

from __future__ import annotations

import numpy as np

from tuplehub.storage.errors import MetricUndefined
from tuplehub.storage.metrics import MetricResult

VERSION = "1"


def action_entropy(action: np.ndarray, *, n_actions: int | None = None) -> MetricResult:
    """Shannon entropy, in nats, of the share of rows taking each discrete action.

    H = -sum_a p_a ln p_a with p_a = (rows with action a) / (rows); 0 when one action is always
    taken, ln K when K actions are taken equally often. ``normalised`` divides by ln ``n_actions``
    (the action space's size), so 1 means every action of the space equally often. A plug-in
    estimate: with few rows per action it reads low.
    """
    actions = np.asarray(action)
    if actions.ndim != 1 or not np.issubdtype(actions.dtype, np.integer):
        raise MetricUndefined(f"action entropy needs one discrete action id per row, got {actions.dtype} of shape "
                              f"{actions.shape}", field="action")
    if not len(actions):
        raise MetricUndefined("action entropy needs at least one row", field="action")
    ids, counts = np.unique(actions, return_counts=True)
    shares = counts / counts.sum()
    value = float(-(shares * np.log(shares)).sum()) + 0.0  # + 0.0: one action gives 0, not -0
    details = {"distinct_actions": len(ids), "n_actions": n_actions,
               "normalised": value / np.log(n_actions) if n_actions is not None and n_actions > 1 else None,
               "most_common_share": float(shares.max())}
    return MetricResult(metric="action_entropy", value=value, n_rows_used=len(actions), n_episodes_used=0,
                        params={"n_actions": n_actions}, details=details, algo_version=VERSION)
