"""Converters between tuplehub's per-step arrays and other offline-RL formats.

Each works on the dict of arrays that ``Export.to_numpy()`` returns (ask for
``next_observation=True`` where a format needs final observations) and produces what
``Dataset.upload`` accepts. The libraries they target are optional extras and imported only
when their converter is called: ``pip install 'tuplehub[minari]'`` and so on.

- :mod:`.d4rl`: D4RL dicts (``observations, actions, rewards, terminals, timeouts, next_observations``)
- :mod:`.frames`: pandas DataFrames, tensors flattened to ``observation[i]`` columns
- :mod:`.minari`: Minari datasets (N+1 observations per episode)
"""

from tuplehub.client.converters.episodes import episode_slices

__all__ = ["episode_slices"]
