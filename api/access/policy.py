"""The sharing rules for content (datasets now; benchmarks and artifacts use the same functions).

- The owner may read, write, delete and unpublish their item; a restricted API token still narrows.
- Anyone signed in may read a public item (anonymous callers too, when the deployment allows it).
- A member holding ``<kind>:read`` in a group may read what is published to that group.
- Site-wide ``<kind>:delete`` (content admins, admins) reads, writes and deletes every item.
- Publishing to a group needs ``<kind>:publish`` in that group; publishing publicly needs it site-wide.

Whatever a caller may not read is reported exactly like what does not exist (:class:`NotFound`).
"""

from __future__ import annotations

from tuplehub.storage.access import Right
from tuplehub.storage.benchmarks import BenchmarkRecord
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.catalog.base import ReadScope
from tuplehub.storage.errors import Forbidden, NotFound
from tuplehub.storage.models import DatasetRecord
from tuplehub.storage.permissions import Principal, Shared, can_read, content_right, manages_all


def read_scope(caller: Principal, kind: str) -> ReadScope | None:
    """What listings may show the caller; None means everything."""
    if manages_all(caller, kind):
        return None
    if not caller.allows(content_right(kind, "read")):
        return ReadScope(owner=None, groups=frozenset(), public=False)
    return ReadScope(owner=caller.id, groups=caller.groups_holding(content_right(kind, "read")), public=True)


def require_create(caller: Principal, kind: str) -> None:
    if not caller.holds(content_right(kind, "create")):
        raise Forbidden(f"creating a {kind} needs the right {kind}:create")


def require_owner(caller: Principal, item: Shared, kind: str, action: str) -> None:
    """Write or delete: the owner (if the token allows the action), or a site-wide content admin."""
    right = content_right(kind, "create" if action == "write" else action)
    if manages_all(caller, kind) or (item.owner == caller.id and caller.allows(right)):
        return
    raise Forbidden(f"only the owner or a {kind} administrator may {action} this {kind}")


def require_publish(caller: Principal, item: Shared, kind: str, group_ids: list[str], public: bool) -> None:
    require_owner(caller, item, kind, "publish")
    right = content_right(kind, "publish")
    if public and not caller.holds(right):
        raise Forbidden(f"publishing a {kind} to everyone needs the right {right} site-wide")
    for group_id in group_ids:
        if not (caller.holds_in(right, group_id) or manages_all(caller, kind)):
            raise Forbidden(f"publishing to a group needs the right {right} in that group")


def require_unpublish(caller: Principal, item: Shared, kind: str, group_ids: list[str]) -> None:
    """Taking an item out of view: its owner (whose token allows publishing), a content admin, or
    the admin of the groups it leaves."""
    if manages_all(caller, kind) or (item.owner == caller.id and caller.allows(content_right(kind, "publish"))):
        return
    if group_ids and all(caller.holds_in(Right.group_update, group) for group in group_ids):
        return
    raise Forbidden(f"only the owner, a {kind} administrator or the group's admin may unpublish this {kind}")


def require_password_sign_in(caller: Principal) -> None:
    """Changing one's own password needs a sign-in with the password: an API token, however many
    rights it carries, must not turn into the account itself."""
    if caller.via != "access":
        raise Forbidden("changing your own password needs a sign-in with the password, not an API token")


async def readable_benchmark(catalog: Catalog, caller: Principal, benchmark_id: str) -> BenchmarkRecord:
    """A record of the benchmark the caller may read (their own first): one spec may be stored by
    several owners, each with its own visibility."""
    records, _ = await catalog.find_records("benchmarks", BenchmarkRecord, where={"benchmark_id": benchmark_id})
    readable = sorted((r for r in records if can_read(caller, r, "benchmark")), key=lambda r: r.owner != caller.id)
    if not readable:
        raise NotFound(f"no benchmark {benchmark_id!r}", benchmark=benchmark_id)
    return readable[0]


async def readable_dataset(catalog: Catalog, caller: Principal, name: str) -> DatasetRecord:
    """The dataset if the caller may read it; otherwise the same NotFound as for a missing name."""
    dataset = await catalog.get_dataset(name)
    if not can_read(caller, dataset, "dataset"):
        raise NotFound(f"no dataset named {name!r}", name=name)
    return dataset
