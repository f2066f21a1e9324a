"""Jobs find their version by one lookup: a dataset or version deleted while the job was queued is
:class:`NotFound` naming it, never ``RuntimeError: coroutine raised StopIteration``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import NotFound
from tuplehub.storage.models import DatasetRecord, UploadMode
from tuplehub.workers.jobs.derive import _derive
from tuplehub.workers.jobs.export import _export


def _run(catalog: Catalog, **params: object) -> SimpleNamespace:
    return SimpleNamespace(catalog=catalog, job=SimpleNamespace(id="job1", attempts=1, params=params))


async def test_an_export_or_derive_whose_version_is_gone_fails_with_not_found(catalog: Catalog) -> None:
    dataset = await catalog.create_dataset(DatasetRecord(name="gone-soon", owner="olivia"))
    for dataset_id, says in ((dataset.id, "'gone-soon'"), ("no-such-id", "was deleted")):
        with pytest.raises(NotFound, match=says):
            await _export(_run(catalog, dataset_id=dataset_id, dataset="gone-soon", version=3, request={}))  # type: ignore[arg-type]
        source = {"dataset": "gone-soon", "dataset_id": dataset_id, "version": 3}
        with pytest.raises(NotFound, match=says):
            await _derive(_run(catalog, dataset="target", dataset_id=dataset.id, mode=UploadMode.replace.value,  # type: ignore[arg-type]
                               renumber=False, sources=[source]))
