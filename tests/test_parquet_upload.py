"""Parquet files a user sends back: what the ingest says when they break the tuple contract."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tuplehub.client import Client, F, JobFailed

from .factories import episode_arrays


def test_a_tuple_filtered_export_uploaded_again_points_to_derive(hub: Client, tmp_path: Path) -> None:
    """C15: the step error was right but left the user stuck; it now says why and what to run instead."""
    source = hub.datasets.create(f"pq-{uuid.uuid4().hex[:8]}")
    source.upload(episode_arrays(episodes=3, length=10, ragged=False)).wait()
    filtered = source.export(where=F.step.isin([0, 1, 5]), format="parquet").download(tmp_path / "filtered.parquet")
    again = hub.datasets.create(f"pq-{uuid.uuid4().hex[:8]}")
    with pytest.raises(JobFailed) as failure:
        again.upload(filtered).wait()
    message = str(failure.value)
    assert "column 'step', row 2: step 5 follows step 1 in episode 0; steps of an episode must increase by one" \
        in message
    assert "tuple-filtered export keep their original steps" in message
    assert "tuplehub derive" in message
    assert "--renumber" in message
    assert again.refresh().latest_version is None


def test_a_repeated_step_gets_no_export_hint(hub: Client) -> None:
    arrays = episode_arrays(episodes=1, length=4, ragged=False)
    arrays["step"][2] = 1
    dataset = hub.datasets.create(f"pq-{uuid.uuid4().hex[:8]}")
    with pytest.raises(JobFailed, match="step 1 appears twice in episode 0") as failure:
        dataset.upload(arrays).wait()
    assert "derive" not in str(failure.value)
