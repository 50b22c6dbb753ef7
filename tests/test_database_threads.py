"""On PostgreSQL the chat's database calls run on several threads (`chat.database_threads`):
one member's send that waits does not hold up another member's."""

import asyncio
import json
import threading

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.db import connections, transaction

from chat import actions
from chat.models import Message
from tests import live
from tests.test_quotas import access_for

postgresql_only = pytest.mark.skipif(
    not django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
    reason="SQLite takes one writer at a time: its calls stay on one thread",
)


def send_while_alices_row_is_locked(alice, bob) -> bool:
    """Alice sends while her row is locked elsewhere (as another of her tabs or processes does
    while it writes), then Bob sends. Whether Bob's send was stored while Alice's waited."""
    alice_access = access_for(alice, actions.start_conversation(alice, None))
    bob_access = access_for(bob, actions.start_conversation(bob, None))
    locked, release = threading.Event(), threading.Event()

    def hold_alices_row() -> None:
        try:
            with transaction.atomic():
                list(get_user_model().objects.select_for_update().filter(pk=alice.pk))
                locked.set()
                release.wait(30)
        finally:
            connections.close_all()

    async def both_send() -> bool:
        alices = asyncio.ensure_future(actions.post_user_message(alice_access, "waits", "ch"))
        await asyncio.sleep(0.5)  # her send reaches the lock
        bobs = asyncio.ensure_future(actions.post_user_message(bob_access, "goes", "ch"))
        await asyncio.wait({bobs}, timeout=5)
        bob_first = bobs.done() and not alices.done()
        release.set()
        await asyncio.wait_for(asyncio.gather(alices, bobs), 10)
        return bob_first

    holder = threading.Thread(target=hold_alices_row)
    holder.start()
    try:
        assert locked.wait(10)
        bob_first = async_to_sync(both_send)()
    finally:
        release.set()
        holder.join(10)
    # Both were stored in the end, whichever way.
    assert sorted(Message.objects.filter(role="user").values_list("content", flat=True)) == [
        "goes",
        "waits",
    ]
    return bob_first


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_member_whose_send_waits_does_not_hold_up_another_members_send(alice, bob, settings):
    settings.DATABASE_THREADS = 4
    assert send_while_alices_row_is_locked(alice, bob)


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_with_no_database_threads_every_call_waits_its_turn_on_one(alice, bob, settings):
    # DATABASE_THREADS=0, SQLite's arrangement: Bob's send queues behind Alice's.
    settings.DATABASE_THREADS = 0
    assert not send_while_alices_row_is_locked(alice, bob)


@pytest.mark.parametrize(
    ("env", "threads"),
    [
        ({"DATABASE_URL": "sqlite:////tmp/x.sqlite3"}, 0),
        ({"DATABASE_URL": "sqlite:////tmp/x.sqlite3", "DATABASE_THREADS": "4"}, 0),
        ({}, 4),
        ({"DATABASE_POOL_MAX_SIZE": "5"}, 2),
        ({"DATABASE_POOL_MAX_SIZE": "1"}, 0),
        ({"DATABASE_THREADS": "8"}, 8),
    ],
)
def test_how_many_threads_by_default_and_as_set(env, threads):
    postgresql = {"DATABASE_URL": "postgres://app@127.0.0.1:5432/serika"}
    result = live.production_settings({**postgresql, **env}, "DATABASE_THREADS")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [threads]


@pytest.mark.parametrize("threads", ["20", "-1"])
def test_a_thread_count_that_leaves_pages_no_connection_is_refused_at_start(threads):
    result = live.production_settings(
        {"DATABASE_URL": "postgres://app@127.0.0.1:5432/serika", "DATABASE_THREADS": threads}
    )
    assert result.returncode != 0
    assert "DATABASE_THREADS must be at least 0 and less than DATABASE_POOL_MAX_SIZE (20)" in (
        result.stderr
    )
