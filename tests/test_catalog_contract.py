"""The catalog contract: every backend (SQLite, MongoDB) must pass each of these tests."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tuplehub.storage.catalog import Catalog
from tuplehub.storage.catalog.sqlite import SQLiteCatalog
from tuplehub.storage.errors import Conflict, InvalidUpload, NotFound, StoreUnavailable
from tuplehub.storage.filters.prune import Constraint
from tuplehub.storage.models import (
    DatasetRecord,
    JobStatus,
    SegmentRef,
    UploadMode,
    UploadStatus,
    VersionRecord,
    utcnow,
)
from tuplehub.storage.schema import TensorSpec
from tuplehub.storage.versions import commit_segment, get_version

from .factories import SCHEMA, block_record, episode_record, job_record, upload_record


async def new_dataset(catalog: Catalog, name: str = "cartpole", tags: list[str] | None = None) -> DatasetRecord:
    return await catalog.create_dataset(DatasetRecord(name=name, owner="alice", tags=tags or []))


async def test_dataset_names_are_unique(catalog: Catalog) -> None:
    await new_dataset(catalog)
    with pytest.raises(Conflict, match="already exists"):
        await new_dataset(catalog)


async def test_get_missing_dataset_is_not_found(catalog: Catalog) -> None:
    with pytest.raises(NotFound):
        await catalog.get_dataset("nope")


async def test_list_datasets_filters_and_pages(catalog: Catalog) -> None:
    for name, tags in (("alpha", ["demo"]), ("beta", []), ("alphabet", ["demo", "x"]), ("gamma", ["demo"])):
        await new_dataset(catalog, name, tags)
    items, total = await catalog.list_datasets(name="ALPHA", tag=None, offset=0, limit=10)
    assert ([d.name for d in items], total) == (["alpha", "alphabet"], 2)
    items, total = await catalog.list_datasets(name=None, tag="demo", offset=1, limit=1)
    assert ([d.name for d in items], total) == (["alphabet"], 3)
    items, _ = await catalog.list_datasets(name=".*", tag=None, offset=0, limit=10)
    assert items == []  # a name is a literal substring, never a pattern


async def test_summary_counts_come_from_the_latest_version(catalog: Catalog) -> None:
    dataset = await new_dataset(catalog)
    for number, episodes in ((1, 2), (2, 5)):
        await catalog.insert_version(VersionRecord(
            dataset_id=dataset.id, number=number, mode=UploadMode.append, job_id=f"job{number}", schema=SCHEMA,
            segments=[SegmentRef(id=f"s{number}", episodes=episodes, transitions=episodes * 10)]))
    [summary], _ = await catalog.list_datasets(name=None, tag=None, offset=0, limit=10)
    assert (summary.latest_version, summary.episodes, summary.transitions) == (2, 5, 50)


async def test_version_numbers_and_jobs_are_unique(catalog: Catalog) -> None:
    version = VersionRecord(dataset_id="d", number=1, mode=UploadMode.append, job_id="j1", schema=SCHEMA,
                            segments=[SegmentRef(id="j1", episodes=1, transitions=1)])
    assert await catalog.insert_version(version)
    assert not await catalog.insert_version(version.model_copy(update={"job_id": "j2"}))
    assert not await catalog.insert_version(version.model_copy(update={"number": 2}))
    assert (await catalog.find_version_by_job("j1")) == version
    assert await catalog.find_version_by_job("j2") is None


async def test_blocks_overwrite_by_segment_and_seq(catalog: Catalog) -> None:
    await catalog.put_blocks([block_record("s", 0), block_record("s", 1)])
    await catalog.put_blocks([block_record("s", 1, data=b"retried")])  # a retry: same key
    listed = await catalog.list_blocks("s")
    assert [(b.seq, b.data) for b in listed] == [(0, b""), (1, b"")]  # listing leaves the bytes out
    read = [b async for b in catalog.read_blocks("s", [1, 0])]
    assert [(b.seq, b.data, b.tail) for b in read] == [(1, b"retried", b"tail"), (0, b"data", b"tail")]
    with pytest.raises(NotFound):
        [b async for b in catalog.read_blocks("s", [7])]


async def test_episodes_narrow_by_constraints(catalog: Catalog) -> None:
    await catalog.put_episodes([episode_record("s", i, return_=float(i), length=i + 1) for i in range(6)])
    await catalog.put_episodes([episode_record("s", 2, return_=100.0, length=3)])  # overwritten, not duplicated
    found = await catalog.list_episodes("s", [Constraint("return", "ge", 3.0), Constraint("length", "lt", 6)])
    assert [e.index for e in found] == [2, 3, 4]
    assert len(await catalog.list_episodes("s")) == 6


async def test_shared_episode_ids_are_found(catalog: Catalog) -> None:
    await catalog.put_episodes([episode_record("old", i) for i in range(3)])
    await catalog.put_episodes([episode_record("new", i, episode_id=i + 3) for i in range(3)])
    assert await catalog.find_shared_episode_id("new", ["old"]) is None
    await catalog.put_episodes([episode_record("new", 3, episode_id=1)])
    assert await catalog.find_shared_episode_id("new", ["old"]) == 1
    await catalog.put_episodes([episode_record("strs", 0, episode_id="1")])
    assert await catalog.find_shared_episode_id("strs", ["old"]) is None  # "1" is not 1


async def test_delete_segment_removes_blocks_and_episodes(catalog: Catalog) -> None:
    await catalog.put_blocks([block_record("gone", 0), block_record("kept", 0)])
    await catalog.put_episodes([episode_record("gone", 0)])
    assert await catalog.list_segments() == {"gone", "kept"}
    await catalog.delete_segment("gone")
    assert await catalog.list_segments() == {"kept"}
    assert await catalog.list_episodes("gone") == []


async def test_upload_transitions_are_guarded(catalog: Catalog) -> None:
    upload = await catalog.create_upload(upload_record())
    assert await catalog.transition_upload(upload.id, UploadStatus.open, UploadStatus.completed, job_id="j")
    assert not await catalog.transition_upload(upload.id, UploadStatus.open, UploadStatus.aborted)
    stored = await catalog.get_upload(upload.id)
    assert (stored.status, stored.job_id) == (UploadStatus.completed, "j")
    with pytest.raises(NotFound):
        await catalog.get_upload("missing")


async def test_expired_uploads_are_listed(catalog: Catalog) -> None:
    stale = await catalog.create_upload(upload_record(expires_in_s=-10))
    await catalog.create_upload(upload_record(expires_in_s=3600))
    found = await catalog.list_uploads(UploadStatus.open, expires_before=utcnow())
    assert [u.id for u in found] == [stale.id]


async def test_open_uploads_of_one_owner_on_one_dataset_are_listed_newest_first(catalog: Catalog) -> None:
    older = await catalog.create_upload(upload_record().model_copy(update={"created_at": utcnow() - timedelta(1)}))
    newer = await catalog.create_upload(upload_record())
    await catalog.create_upload(upload_record(expires_in_s=-10))  # expired
    await catalog.create_upload(upload_record("d2"))  # another dataset
    await catalog.create_upload(upload_record().model_copy(update={"owner": "bob"}))
    done = await catalog.create_upload(upload_record())
    await catalog.transition_upload(done.id, UploadStatus.open, UploadStatus.completed)
    found = await catalog.list_open_uploads("d1", "alice", expires_after=utcnow())
    assert [u.id for u in found] == [newer.id, older.id]


async def test_job_lifecycle(catalog: Catalog) -> None:
    job = await catalog.create_job(job_record())
    claimed = await catalog.claim_job(job.id, worker="w1")
    assert claimed is not None
    assert (claimed.status, claimed.attempts, claimed.worker) == (JobStatus.running, 1, "w1")
    await catalog.update_job(job.id, progress={"fraction": 0.5, "stage": "export", "message": "half"})
    assert (await catalog.get_job(job.id)).progress.fraction == 0.5
    assert await catalog.claim_job(job.id, worker="w2") is not None  # a retry may take it over
    assert await catalog.finish_job(job.id, JobStatus.succeeded, result={"rows": 3})
    assert not await catalog.finish_job(job.id, JobStatus.failed, error={"code": "x", "detail": "late"})
    done = await catalog.get_job(job.id)
    assert (done.status, done.result, done.error, done.attempts) == (JobStatus.succeeded, {"rows": 3}, None, 2)
    assert await catalog.claim_job(job.id, worker="w3") is None
    await catalog.update_job(job.id, progress={"fraction": 0.1, "stage": "late", "message": ""})
    assert (await catalog.get_job(job.id)).progress.stage == "done"


async def test_identical_jobs_share_one_record_until_it_fails(catalog: Catalog) -> None:
    first = await catalog.create_job(job_record(dedup_key="k"))
    assert (await catalog.create_job(job_record(dedup_key="k"))).id == first.id
    await catalog.finish_job(first.id, JobStatus.failed, error={"code": "x", "detail": "boom"})
    again = await catalog.create_job(job_record(dedup_key="k"))
    assert again.id != first.id
    assert (await catalog.create_job(job_record(dedup_key="k"))).id == again.id


async def test_cancel_queued_and_running_jobs(catalog: Catalog) -> None:
    queued = await catalog.create_job(job_record())
    assert (await catalog.request_cancel(queued.id)).status == JobStatus.cancelled
    running = await catalog.create_job(job_record())
    await catalog.claim_job(running.id, worker="w")
    asked = await catalog.request_cancel(running.id)
    assert (asked.status, asked.cancel_requested) == (JobStatus.running, True)
    assert await catalog.claim_job(running.id, worker="w") is None


async def test_concurrent_job_updates_lose_nothing(catalog: Catalog) -> None:
    job = await catalog.create_job(job_record())
    await catalog.claim_job(job.id, worker="w")
    await asyncio.gather(catalog.request_cancel(job.id),
                         *(catalog.update_job(job.id, heartbeat_at=utcnow()) for _ in range(10)))
    assert (await catalog.get_job(job.id)).cancel_requested


async def test_list_jobs_newest_first_with_filters(catalog: Catalog) -> None:
    now = utcnow()
    ids = []
    for age, owner in ((3, "alice"), (2, "bob"), (1, "alice")):
        ids.append((await catalog.create_job(job_record(owner=owner, created_at=now - timedelta(minutes=age)))).id)
    items, total = await catalog.list_jobs(owner="alice", status=None, kind=None, offset=0, limit=10)
    assert ([j.id for j in items], total) == ([ids[2], ids[0]], 2)
    await catalog.claim_job(ids[1], worker="w")
    assert [j.id for j in await catalog.jobs_with_status([JobStatus.running])] == [ids[1]]


async def test_ping(catalog: Catalog) -> None:
    await catalog.ping()


# --- versions built on the catalog -------------------------------------------------------------

async def commit(catalog: Catalog, dataset: DatasetRecord, segment: str, episodes: int, mode: UploadMode,
                 schema=SCHEMA) -> VersionRecord:
    await catalog.put_episodes([episode_record(segment, i, episode_id=f"{segment}-{i}") for i in range(episodes)])
    return await commit_segment(catalog, dataset.id, mode=mode, schema=schema, job_id=segment,
                                segment=SegmentRef(id=segment, episodes=episodes, transitions=episodes * 10))


async def test_append_shares_segments_and_replace_starts_over(catalog: Catalog) -> None:
    dataset = await new_dataset(catalog)
    v1 = await commit(catalog, dataset, "a", 2, UploadMode.append)
    v2 = await commit(catalog, dataset, "b", 3, UploadMode.append)
    v3 = await commit(catalog, dataset, "c", 1, UploadMode.replace)
    assert [(v.number, [s.id for s in v.segments], v.episodes) for v in (v1, v2, v3)] == [
        (1, ["a"], 2), (2, ["a", "b"], 5), (3, ["c"], 1)]
    assert (await get_version(catalog, dataset, 2)).segments == v2.segments  # old versions stay readable
    with pytest.raises(NotFound, match="no version 9"):
        await get_version(catalog, dataset, 9)


async def test_commit_is_idempotent_per_job(catalog: Catalog) -> None:
    dataset = await new_dataset(catalog)
    first = await commit(catalog, dataset, "a", 2, UploadMode.append)
    again = await commit(catalog, dataset, "a", 2, UploadMode.append)
    assert again == first
    assert len(await catalog.list_versions(dataset.id)) == 1


async def test_append_refuses_duplicate_episode_ids(catalog: Catalog) -> None:
    dataset = await new_dataset(catalog)
    await commit(catalog, dataset, "a", 2, UploadMode.append)
    await catalog.put_episodes([episode_record("b", 0, episode_id="a-1")])
    with pytest.raises(InvalidUpload, match="'a-1' is already in version 1"):
        await commit_segment(catalog, dataset.id, mode=UploadMode.append, schema=SCHEMA, job_id="b",
                             segment=SegmentRef(id="b", episodes=1, transitions=10))


async def test_append_refuses_another_schema(catalog: Catalog) -> None:
    dataset = await new_dataset(catalog)
    await commit(catalog, dataset, "a", 1, UploadMode.append)
    wider = SCHEMA.model_copy(update={"observation": TensorSpec(dtype="float64", shape=[3])})
    with pytest.raises(InvalidUpload, match=r"float64\[3\] in the upload but float32\[3\] in version 1"):
        await commit(catalog, dataset, "b", 1, UploadMode.append, schema=wider)
    assert (await commit(catalog, dataset, "c", 1, UploadMode.replace, schema=wider)).number == 2


async def test_concurrent_commits_get_distinct_numbers(catalog: Catalog) -> None:
    dataset = await new_dataset(catalog)
    versions = await asyncio.gather(*(commit(catalog, dataset, f"s{i}", 1, UploadMode.append) for i in range(5)))
    assert sorted(v.number for v in versions) == [1, 2, 3, 4, 5]
    latest = (await catalog.list_versions(dataset.id))[-1]
    assert len(latest.segments) == 5


async def test_creating_a_job_twice_by_id_keeps_the_first(catalog: Catalog) -> None:
    first = await catalog.create_job(job_record(params={"n": 1}))
    again = await catalog.create_job(job_record(id=first.id, params={"n": 2}))
    assert again.params == {"n": 1}


# --- sharing and access records ---------------------------------------------------------------------

async def test_listing_honours_the_read_scope(catalog: Catalog) -> None:
    from tuplehub.storage.catalog.base import ReadScope

    await catalog.create_dataset(DatasetRecord(name="mine", owner="alice"))
    other = await catalog.create_dataset(DatasetRecord(name="other", owner="bob"))
    shared = await catalog.create_dataset(DatasetRecord(name="shared", owner="bob"))
    public = await catalog.create_dataset(DatasetRecord(name="public", owner="bob"))
    await catalog.share_dataset(shared.id, add_groups=["g1", "g2"])
    await catalog.share_dataset(public.id, public=True)

    async def names(scope: ReadScope | None, **options: object) -> tuple[list[str], int]:
        items, total = await catalog.list_datasets(name=None, tag=None, offset=0, limit=10, readable=scope,
                                                   **options)  # type: ignore[arg-type]
        return [item.name for item in items], total

    assert await names(ReadScope("alice", frozenset(), public=True)) == (["mine", "public"], 2)
    assert await names(ReadScope("alice", frozenset({"g2"}), public=False)) == (["mine", "shared"], 2)
    assert await names(ReadScope(None, frozenset(), public=True)) == (["public"], 1)
    assert await names(ReadScope(None, frozenset(), public=False)) == ([], 0)
    assert await names(None) == (["mine", "other", "public", "shared"], 4)
    assert await names(None, owner="bob") == (["other", "public", "shared"], 3)
    assert other.visibility == "private"


async def test_sharing_changes_are_merged_not_overwritten(catalog: Catalog) -> None:
    dataset = await new_dataset(catalog)
    await asyncio.gather(catalog.share_dataset(dataset.id, add_groups=["a"]),
                         catalog.share_dataset(dataset.id, add_groups=["b"]))
    assert (await catalog.get_dataset(dataset.name)).groups == ["a", "b"]
    updated = await catalog.share_dataset(dataset.id, remove_groups=["a"], public=True)
    assert (updated.groups, updated.public, updated.visibility) == (["b"], True, "public")
    with pytest.raises(NotFound):
        await catalog.share_dataset("missing", public=True)


async def test_deleting_a_dataset_removes_its_versions(catalog: Catalog) -> None:
    dataset = await new_dataset(catalog)
    await commit_segment(catalog, dataset.id, mode=UploadMode.append, segment=SegmentRef(
        id="s1", episodes=1, transitions=3), schema=SCHEMA, job_id="j1")
    await catalog.delete_dataset(dataset.id)
    with pytest.raises(NotFound):
        await catalog.get_dataset(dataset.name)
    assert await catalog.list_versions(dataset.id) == []
    assert await catalog.find_version_by_job("j1") is None


async def test_access_records_round_trip(catalog: Catalog) -> None:
    from tuplehub.storage.access import GroupRecord, RefreshTokenRecord, UserRecord

    alice = UserRecord(name="alice", password_hash="h", site_roles=["contributor"])
    await catalog.insert_record("users", alice, unique="alice")
    with pytest.raises(Conflict):  # users and groups share one namespace
        await catalog.insert_record("groups", GroupRecord(name="alice", created_by=alice.id), unique="alice")
    await catalog.insert_record("groups", GroupRecord(name="lab", created_by=alice.id), unique="lab")
    assert (await catalog.get_record("users", UserRecord, name="alice")).id == alice.id
    with pytest.raises(NotFound):
        await catalog.get_record("users", UserRecord, name="lab")  # a group is not a user
    later = utcnow() + timedelta(hours=1)
    tokens = [RefreshTokenRecord(hash=f"h{i}", user_id=alice.id, family="f", expires_at=later,
                                 created_at=utcnow() + timedelta(seconds=i)) for i in range(3)]
    for token in tokens:
        await catalog.insert_record("refresh_tokens", token, unique=token.hash)
    page, total = await catalog.find_records("refresh_tokens", RefreshTokenRecord, where={"user_id": alice.id},
                                             newest_first=True, offset=1, limit=1)
    assert (total, [t.hash for t in page]) == (3, ["h1"])
    window, _ = await catalog.find_records("refresh_tokens", RefreshTokenRecord, since=tokens[1].created_at,
                                           until=tokens[2].created_at)
    assert [t.hash for t in window] == ["h1"]
    any_of, _ = await catalog.find_records("refresh_tokens", RefreshTokenRecord, where={"hash": ["h0", "h2"]})
    assert [t.hash for t in any_of] == ["h0", "h2"]
    # Compare-and-swap: only the first of two spenders wins.
    first = await catalog.update_record("refresh_tokens", RefreshTokenRecord, tokens[0].id,
                                        expected={"spent": False}, spent=True)
    second = await catalog.update_record("refresh_tokens", RefreshTokenRecord, tokens[0].id,
                                         expected={"spent": False}, spent=True)
    assert first is not None
    assert first.spent
    assert second is None
    assert await catalog.delete_records("refresh_tokens", RefreshTokenRecord, user_id=alice.id) == 3
    assert (await catalog.find_records("refresh_tokens", RefreshTokenRecord))[1] == 0


async def test_access_queries_refuse_unknown_fields_and_operator_values(catalog: Catalog) -> None:
    from tuplehub.storage.access import UserRecord

    with pytest.raises(ValueError, match="no field"):
        await catalog.find_records("users", UserRecord, where={"$where": "1"})
    with pytest.raises(ValueError, match="plain"):
        await catalog.find_records("users", UserRecord, where={"name": {"$ne": "x"}})
    with pytest.raises(ValueError, match="no field"):
        await catalog.update_record("users", UserRecord, "x", **{"$set": 1})


async def test_closing_waits_for_calls_in_progress_and_later_calls_fail_cleanly(catalog: Catalog) -> None:
    """A shutdown that races a request (a heartbeat, a poll) must neither crash nor hang it."""
    await new_dataset(catalog, "racing")
    calls = [asyncio.ensure_future(catalog.get_dataset("racing")) for _ in range(20)]
    await asyncio.sleep(0)
    await catalog.aclose()
    done = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout=30)
    assert all(not isinstance(result, BaseException) or isinstance(result, StoreUnavailable) for result in done)
    if isinstance(catalog, SQLiteCatalog):
        with pytest.raises(StoreUnavailable, match="closed"):
            await asyncio.wait_for(catalog.get_dataset("racing"), timeout=30)
    await catalog.aclose()  # closing twice is harmless
