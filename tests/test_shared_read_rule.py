"""The workers read by the API's rule: a scheduled sweep, re-running a stored request as its owner,
reaches exactly what that owner could read through the API, for every role of the permission matrix."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

from tuplehub.api.access.bootstrap import seed_roles
from tuplehub.api.access.policy import can_read
from tuplehub.storage.access import MembershipRecord, UserRecord
from tuplehub.storage.artifacts import ArtifactRecord
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.models import DatasetRecord
from tuplehub.storage.permissions import principal_of
from tuplehub.workers.jobs.metric_registry import owner_reads

LAB = "lab-group-id"
# name -> (site roles, roles in the lab): the matrix's cast, plus a content admin and a lab member
# whose role there holds no read right (group administration only).
CAST = {"gus": (["guest"], None), "mia": (["guest"], ["member"]), "carl": (["contributor"], ["contributor"]),
        "olivia": (["contributor"], ["contributor"]), "gina": (["guest"], ["group_admin", "member"]),
        "gail": (["guest"], ["group_admin"]), "cora": (["content_admin"], None), "ada": (["admin"], None)}
SCOPES = {"private": {}, "group": {"groups": [LAB]}, "public": {"public": True}}


async def test_the_sweeps_read_rule_is_the_apis_for_every_role_and_scope(catalog: Catalog) -> None:
    await seed_roles(catalog)
    users = {}
    for name, (site_roles, lab_roles) in CAST.items():
        user = UserRecord(name=name, password_hash="-", site_roles=site_roles)
        await catalog.insert_record("users", user, unique=name)
        if lab_roles is not None:
            await catalog.insert_record("memberships", MembershipRecord(
                id=MembershipRecord.key(LAB, user.id), group_id=LAB, user_id=user.id, roles=lab_roles))
        users[name] = user
    owner = users["olivia"].id
    items = [(DatasetRecord(name=f"d-{scope}", owner=owner, **sharing), "dataset") for scope, sharing in SCOPES.items()]
    items += [(ArtifactRecord(artifact_id=f"a-{scope}", name="policy.bin", media_type="application/octet-stream",
                              size=1, object_key="k", owner=owner, **sharing), "artifact")
              for scope, sharing in SCOPES.items()]
    decisions = {}
    for (name, user), (item, kind) in itertools.product(users.items(), items):
        run = SimpleNamespace(catalog=catalog, job=SimpleNamespace(owner=user.id))
        api = can_read(await principal_of(catalog, user), item, kind)
        decisions[name, kind, item.visibility] = (await owner_reads(run, item), api)  # type: ignore[arg-type]
    assert {key: worker for key, (worker, _) in decisions.items()} == {key: api for key, (_, api) in decisions.items()}
    assert decisions["gail", "dataset", "groups"] == (False, False)  # a lab member without a read right
    assert decisions["cora", "dataset", "private"] == (True, True)   # a content admin
