"""Episode rules of the tuple contract, checked while an upload streams past.

Rows of one episode are contiguous and in step order (consecutive steps, no duplicates); only an
episode's last row may set ``terminated`` or ``truncated``; an episode id appears in one run
only. :class:`EpisodeSplitter` checks this batch by batch, keeping only the open episode and the
set of ids seen, and hands back each row's segment-local episode index and each finished
episode's statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tuplehub.storage.contract import UploadLayout
from tuplehub.storage.errors import InvalidUpload

# Steps that skip ahead are what a tuple-filtered export looks like when it is uploaded again.
_FILTERED_HINT = (". Rows of a tuple-filtered export keep their original steps, so they do not form episodes; "
                  "make the subset on the server instead: `tuplehub derive NEW --source "
                  "'{\"dataset\": ..., \"where\": ...}' --renumber` (or an \"episodes\" filter for whole episodes)")


@dataclass
class EpisodeStats:
    """Statistics of one episode, gathered over the batches it spans."""

    index: int
    episode_id: Any
    first_row: int
    first_step: int
    length: int = 0
    last_step: int = 0
    return_: float = 0.0
    reward_min: float = float("inf")
    reward_max: float = float("-inf")
    terminated: bool = False
    truncated: bool = False

    @property
    def ended(self) -> bool:
        return self.terminated or self.truncated


@dataclass
class EpisodeSplitter:
    layout: UploadLayout
    rows: int = 0
    finished: list[EpisodeStats] = field(default_factory=list)
    _open: EpisodeStats | None = None
    _seen: set[Any] = field(default_factory=set)

    def feed(self, columns: dict[str, pa.Array]) -> pa.Table:
        """Check one normalised batch; return it in the stored layout (with ``episode`` and ``step``)."""
        n = len(columns["reward"])
        if n == 0:
            return pa.table({})
        first_row = self.rows
        ids = columns["episode_id"]
        starts = run_starts(ids)
        run_ids = ids.take(pa.array(starts)).to_pylist()
        lengths = np.diff(np.append(starts, n))
        # The episode left open by the last batch, if this batch goes on with it.
        resumed = self._open if self._open is not None and run_ids[0] == self._open.episode_id else None
        continuing = resumed is not None
        if resumed is not None and resumed.ended:
            flag = "terminated" if resumed.terminated else "truncated"
            raise InvalidUpload(f"episode {run_ids[0]!r} goes on after it was {flag}",
                                column="episode_id", row=first_row, reason="step-after-end")

        runs: list[EpisodeStats] = []
        for position, (start, episode_id) in enumerate(zip(starts, run_ids, strict=True)):
            if position == 0 and resumed is not None:
                runs.append(resumed)
                continue
            if self._open is not None:
                self.finished.append(self._open)
            if episode_id in self._seen:
                raise InvalidUpload(
                    f"episode {episode_id!r} appears again after other episodes; the rows of an episode "
                    "must be contiguous", column="episode_id", row=first_row + int(start),
                    reason="episode-not-contiguous")
            self._seen.add(episode_id)
            self._open = EpisodeStats(index=len(self._seen) - 1, episode_id=episode_id,
                                      first_row=first_row + int(start), first_step=0)
            runs.append(self._open)

        steps = self._steps(columns, starts, lengths, runs, continuing, first_row)
        self._check_flags(columns, starts, n, first_row)
        self._accumulate(columns, starts, lengths, runs, steps)
        self.rows += n

        index = np.repeat(np.array([run.index for run in runs], dtype=np.int32), lengths)
        stored = {"episode": pa.array(index), "step": pa.array(steps)}
        stored |= {name: columns[name] for name in columns if name not in ("episode_id", "step")}
        return pa.table(stored)

    def close(self) -> list[EpisodeStats]:
        """Finish the upload; returns (and clears) every episode not yet collected."""
        if self._open is not None:
            self.finished.append(self._open)
            self._open = None
        return self.collect()

    def collect(self) -> list[EpisodeStats]:
        """Episodes known to be complete so far (the open one is held back)."""
        done, self.finished = self.finished, []
        return done

    def _steps(self, columns: dict[str, pa.Array], starts: np.ndarray, lengths: np.ndarray,
               runs: list[EpisodeStats], continuing: bool, first_row: int) -> np.ndarray:
        n = int(lengths.sum())
        if not self.layout.has_step:
            offsets = np.array([run.length if (i == 0 and continuing) else 0
                                for i, run in enumerate(runs)], dtype=np.int64)
            return np.arange(n, dtype=np.int64) - np.repeat(starts - offsets, lengths)
        steps = columns["step"].to_numpy()
        inside = np.ones(n, dtype=bool)
        inside[starts] = False
        gaps = np.flatnonzero(inside[1:] & (np.diff(steps) != 1)) + 1
        if continuing and steps[0] != runs[0].last_step + 1:
            gaps = np.insert(gaps, 0, 0)
            previous = runs[0].last_step
        elif gaps.size:
            previous = steps[gaps[0] - 1]
        if gaps.size:
            row = int(gaps[0])
            step = int(steps[row])
            reason, what = (("duplicate-step", f"step {step} appears twice in episode")
                            if step == previous else
                            ("step-out-of-order", f"step {step} follows step {previous} in episode"))
            raise InvalidUpload(f"{what} {runs[_run_of(starts, row)].episode_id!r}; steps of an episode "
                                f"must increase by one{_FILTERED_HINT if step > previous else ''}", column="step",
                                row=first_row + row, reason=reason)
        for position, start in enumerate(starts):
            if not (position == 0 and continuing):
                runs[position].first_step = int(steps[start])
        return steps

    def _check_flags(self, columns: dict[str, pa.Array], starts: np.ndarray, n: int, first_row: int) -> None:
        ends = np.zeros(n, dtype=bool)
        ends[starts[1:] - 1] = True
        ends[-1] = True
        for flag in ("terminated", "truncated"):
            values = columns[flag].to_numpy(zero_copy_only=False)
            early = np.flatnonzero(values & ~ends)
            if early.size:
                row = int(early[0])
                raise InvalidUpload(f"is set on row {first_row + row}, but the episode goes on at the next "
                                    "row; only an episode's last row may end it", column=flag,
                                    row=first_row + row + 1, reason="step-after-end")

    def _accumulate(self, columns: dict[str, pa.Array], starts: np.ndarray, lengths: np.ndarray,
                    runs: list[EpisodeStats], steps: np.ndarray) -> None:
        reward = columns["reward"].to_numpy().astype(np.float64, copy=False)
        sums = np.add.reduceat(reward, starts)
        lows = np.minimum.reduceat(reward, starts)
        highs = np.maximum.reduceat(reward, starts)
        ends = np.append(starts[1:], len(reward)) - 1
        terminated = columns["terminated"].to_numpy(zero_copy_only=False)[ends]
        truncated = columns["truncated"].to_numpy(zero_copy_only=False)[ends]
        for i, run in enumerate(runs):
            run.length += int(lengths[i])
            run.return_ += float(sums[i])
            run.reward_min = min(run.reward_min, float(lows[i]))
            run.reward_max = max(run.reward_max, float(highs[i]))
            run.last_step = int(steps[ends[i]])
            run.terminated, run.truncated = bool(terminated[i]), bool(truncated[i])


def run_starts(ids: pa.Array) -> np.ndarray:
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    changed = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
    return np.concatenate([[0], np.flatnonzero(changed) + 1]).astype(np.int64)


def _run_of(starts: np.ndarray, row: int) -> int:
    return int(np.searchsorted(starts, row, side="right") - 1)
