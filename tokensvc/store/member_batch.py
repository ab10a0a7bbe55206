"""A member add with account credentials on PostgreSQL (SPEC §8), batched: concurrent adds share
one transaction on the async pool (db.Batcher, as store/provision.py batches the token
endpoint's get-or-create), so a batch costs the statements one add costs:

1. the batch's channels, locked in SID order, with their services (members.PG_TARGETS);
2. its identities' users, locked in SID order, with their rows in those channels (PG_JOINERS);
3. each add planned in arrival order by store/members.plan_join (the sync path's rules: 50404,
   50403, 50208, the role defaults), counting the adds planned before it: of two adds of one
   pair the second is 409 50404, a channel fills up, a user reaches its limit;
4. the users of new identities that some add still wants: the token endpoint's INSERT … ON
   CONFLICT DO NOTHING with its onUserAdded rows (provision.first_encounters_in), so an identity
   every add refused leaves no user;
5. the invites consumed, then every member row and both counts in one statement (members.PG_JOIN,
   the sync path's statement), then the onMemberAdded rows (outbox.record_async).

Every add's refusal is its own and writes nothing; the others commit. Anything the plan did not
foresee (a lost first-encounter race whose winner moved, a database error) rolls the batch back
and runs each add alone, where it is that add's answer, as on the sync path. Lock order is the
sync path's (channels, then users), so batches, sync adds and deletes deadlock only where they
did before; a deadlock's victim is run again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.errors import DeadlockDetected, ForeignKeyViolation, SerializationFailure, UniqueViolation

from .. import errors
from ..db import Batcher
from ..sids import is_sid
from . import members as store
from . import outbox
from .outbox import Origin
from .provision import first_encounters_in

_RETRIES = 3
Joined = tuple[Mapping[str, Any], Mapping[str, Any], bool]  # (member, user, created)


@dataclass(frozen=True)
class Join:
    """One member add: who asks (the account), where, whom, with which member values
    (store.members.join's), and the origin of its onMemberAdded."""

    account_sid: str
    service_sid: str
    channel_key: str
    identity: str
    values: Mapping[str, Any]
    origin: Origin


class _Unforeseen(Exception):
    """The batch met what its plan did not foresee: run each add alone."""


async def add_member(apg: Any, join: Join) -> Joined:
    """(member, user, created) of one add, batched with the concurrent ones of this process."""
    if not is_sid("IS", join.service_sid) or "\x00" in join.channel_key:
        raise errors.not_found()
    batcher = apg.batchers.get("members.join")
    if batcher is None:
        batcher = apg.batchers["members.join"] = Batcher(lambda items: join_batch(apg, items))
    result: Joined = await batcher(join)
    return result


async def join_batch(apg: Any, items: list[Join]) -> list[Any]:
    """Each add's (member, user, created) or its refusal: the batch in one transaction, run again
    when PostgreSQL chose it as a deadlock's victim; each add alone when the batch failed."""
    failure: Exception | None = None
    for _ in range(_RETRIES):
        try:
            return await apg.transaction(lambda conn: _join_all(conn, items))
        except (DeadlockDetected, SerializationFailure) as exc:
            failure = exc
        except Exception as exc:
            failure = exc
            break
    if len(items) > 1:
        alone = await asyncio.gather(*(join_batch(apg, [item]) for item in items))
        return [outcome for (outcome,) in alone]
    if isinstance(failure, UniqueViolation):  # a lost race the channel lock did not serialize
        return [errors.already_member()]
    if isinstance(failure, ForeignKeyViolation):  # the user, channel or role, deleted meanwhile
        return [errors.not_found()]
    return [failure]


async def _rows(conn: Any, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    cur = await conn.execute(sql, params)
    return await cur.fetchall()


async def _targets(conn: Any, items: Sequence[Join]) -> list[Any]:
    """Per add its locked (service, channel), or 404 when its account has no such service or
    the service no such channel (store.join_target's rule)."""
    by_sid = sorted({j.channel_key for j in items if is_sid("CH", j.channel_key)})
    by_name = sorted({(j.service_sid, j.channel_key) for j in items if not is_sid("CH", j.channel_key)})
    rows = await _rows(conn, store.PG_TARGETS, {"sids": by_sid, "name_services": [s for s, _ in by_name],
                                                "names": [n for _, n in by_name]})
    sids: dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]] = {}
    names: dict[tuple[str, str], tuple[Mapping[str, Any], Mapping[str, Any]]] = {}
    for row in rows:
        service, channel = store.split_target(row)
        sids[channel["sid"]] = service, channel
        if channel["unique_name"] is not None:
            names[(channel["service_sid"], channel["unique_name"])] = service, channel
    targets: list[Any] = []
    for j in items:
        hit = sids.get(j.channel_key) if is_sid("CH", j.channel_key) else names.get((j.service_sid, j.channel_key))
        ok = hit is not None and hit[1]["service_sid"] == j.service_sid and hit[0]["account_sid"] == j.account_sid
        targets.append(hit if ok else errors.not_found())
    return targets


async def _join_all(conn: Any, items: Sequence[Join]) -> list[Any]:
    outcomes: list[Any] = await _targets(conn, items)
    wanted = [(i, j) for i, j in enumerate(items) if not isinstance(outcomes[i], errors.TwilioError)]
    if not wanted:
        return outcomes
    keys = sorted({(j.service_sid, j.identity) for _, j in wanted})
    rows = await _rows(conn, store.PG_JOINERS, {
        "channel_sids": sorted({outcomes[i][1]["sid"] for i, _ in wanted}),
        "service_sids": [s for s, _ in keys], "identities": [n for _, n in keys]})
    users: dict[tuple[str, str], dict[str, Any]] = {}
    rows_in: dict[tuple[str, str], Mapping[str, Any]] = {}  # (channel, user) -> member or invite
    for row in rows:
        user, row_in = store.split_joiner(row)
        users[(user["service_sid"], user["identity"])] = user
        if row_in is not None:
            rows_in[(row_in["channel_sid"], user["sid"])] = row_in

    # Plan in arrival order, each add seeing the counts and rows the adds before it planned.
    members_count: dict[str, int] = {}
    joined: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    plans: dict[int, dict[str, Any]] = {}
    invites: list[int] = []
    for i, j in wanted:
        service, channel = outcomes[i]
        # A first encounter is planned as the user it would be.
        user = users.setdefault((j.service_sid, j.identity), {"sid": None, "identity": j.identity,
                                                              "joined_channels_count": 0})
        pair = (channel["sid"], j.service_sid, j.identity)
        found = joined.get(pair) or rows_in.get((channel["sid"], user["sid"]))
        counted = {**channel, "members_count": members_count.get(channel["sid"], channel["members_count"])}
        try:
            plan = store.plan_join(service=service, channel=counted, user=user, found=found, role_sid=None,
                                   values=j.values)
        except errors.TwilioError as exc:
            outcomes[i] = exc
            continue
        plans[i] = plan
        members_count[channel["sid"]] = counted["members_count"] + 1
        user["joined_channels_count"] += 1
        joined[pair] = plan
        if found is not None:
            invites.append(found["id"])

    if not plans:  # every add refused: nothing to write
        return outcomes
    created = await _create_users(conn, items, outcomes, plans, users)
    if invites:
        await conn.execute(store.PG_DELETE_INVITES, {"ids": invites})
    inserted = {row["sid"]: row for row in await _rows(conn, store.PG_JOIN.postgresql,
                                                      store.join_arrays(list(plans.values())))}
    if len(inserted) < len(plans):  # a user's count did not move: a concurrent add or delete won
        if len(items) > 1:
            raise _Unforeseen()
        user_sid = next(iter(plans.values()))["user_sid"]
        raise store.not_moved(user_exists=bool(await _rows(conn, store.PG_USER_EXISTS, {"user_sid": user_sid})))
    posted: dict[tuple[str, Origin], tuple[Mapping[str, Any], list[Mapping[str, Any]]]] = {}
    for i, plan in plans.items():
        service = outcomes[i][0]
        member = inserted[plan["sid"]]
        posted.setdefault((service["sid"], items[i].origin), (service, []))[1].append(member)
        outcomes[i] = (member, users[(items[i].service_sid, items[i].identity)], i in created)
    for (_, origin), (service, rows_) in posted.items():
        await outbox.record_async(conn, service, "onMemberAdded", rows_, origin)
    return outcomes


async def _create_users(conn: Any, items: Sequence[Join], outcomes: list[Any], plans: dict[int, dict[str, Any]],
                        users: dict[tuple[str, str], dict[str, Any]]) -> set[int]:
    """Create the users of the new identities that a planned add wants, per service; fill their
    SIDs into the plans. The adds that created a user (one per identity)."""
    new: dict[str, tuple[Mapping[str, Any], set[str]]] = {}
    for i in plans:
        key = (items[i].service_sid, items[i].identity)
        if users[key]["sid"] is None:
            new.setdefault(key[0], (outcomes[i][0], set()))[1].add(key[1])
    if not new:
        return set()
    creators: set[tuple[str, str]] = set()
    for service_sid, (service, identities) in new.items():
        for identity, outcome in (await first_encounters_in(conn, service, sorted(identities))).items():
            if isinstance(outcome, errors.TwilioError):
                if len(items) > 1:
                    raise _Unforeseen()
                raise outcome
            user, made = outcome
            users[(service_sid, identity)] = dict(user)  # a winner's count is its own: PG_JOIN's guard decides
            if made:
                creators.add((service_sid, identity))
    created: set[int] = set()
    for i, plan in plans.items():
        key = (items[i].service_sid, items[i].identity)
        plan["user_sid"] = users[key]["sid"]
        if key in creators:
            creators.discard(key)
            created.add(i)
    return created
