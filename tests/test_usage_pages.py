"""The usage pages: each member's own ("Usage"), and the team's for staff with its CSV export.

They read the daily aggregates only, in a fixed number of queries however much was used.
Alice and Bob are members of the Writers; Root is staff. A member never sees anyone else's
usage, and the team page does not exist for members.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from usage import views
from usage.models import DailyUsage, Quota
from usage.views import utc_today

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(db):
    """Root is staff: the team page is his."""
    return get_user_model().objects.create_user("root", password="root-password", is_staff=True)


def usage(user, days_ago: int = 0, *, model="openai/gpt-4o-mini", character=None, **counts):
    values = {"requests": 1, "prompt_tokens": 100, "completion_tokens": 20, **counts}
    return DailyUsage.objects.create(
        user=user,
        day=utc_today() - timedelta(days=days_ago),
        model=model,
        character_pk=character.pk if character else 0,
        character_name=character.name if character else "",
        **values,
    )


def test_the_usage_link_is_in_the_top_bar(client, alice):
    client.force_login(alice)
    assert '<a href="/usage/">Usage</a>' in client.get("/").content.decode()


def test_a_member_sees_today_this_month_by_model_and_by_character_and_the_last_30_days(
    client, alice, bob, character, django_assert_num_queries
):
    usage(alice, 0, character=character, prompt_tokens=1000, completion_tokens=234, requests=3)
    usage(
        alice, 0, model="mistral/small", prompt_tokens=500, completion_tokens=0, estimated_tokens=7
    )
    usage(alice, 1, character=character)
    usage(alice, 45)  # older than the chart and than this month
    usage(bob, 0, model="bobs-own-model", prompt_tokens=99_999)
    for day in range(60):  # rows do not make the page cost more queries
        usage(alice, day, model=f"model-{day % 3}")
    client.force_login(alice)

    # The session and the member, then the days, the month by model, by character, and the
    # member's quotas with what counts against them.
    with django_assert_num_queries(6):
        response = client.get("/usage/")
    assert response.status_code == 200
    page = response.content.decode()
    today = response.context["today"]
    assert (today.total, today.estimated) == (1000 + 234 + 500 + 120, 7)
    assert response.context["today_requests"] == 5
    assert "bobs-own-model" not in page  # Bob's usage is his
    assert "99,999" not in page
    models = {row["model"]: row["n_tokens"] for row in response.context["by_model"]}
    assert models["mistral/small"] == 500
    characters = {row["name"]: row["n_requests"] for row in response.context["by_character"]}
    first_of_month = utc_today().day - 1  # days of this month before today
    assert characters["Serika"] == 3 + (1 if first_of_month >= 1 else 0)
    assert "No character" in characters

    # The chart: 30 bars with an accessible name and description, and a table of the same days.
    chart = response.context["chart"]
    assert len(chart.bars) == 30 and chart.bars[-1].day == utc_today()
    assert 'role="img" aria-labelledby="daily-title daily-desc"' in page
    assert '<title id="daily-title">Tokens per day, the last 30 days</title>' in page
    assert "The table below the chart lists every day." in page
    assert page.count('<tr><th scope="row">') >= 30
    assert "No quota: your usage is not capped." in page


def test_a_member_sees_what_their_quota_leaves(client, alice, settings):
    settings.QUOTA_TOKENS_PER_MONTH = 1_000_000
    settings.QUOTA_REQUESTS_PER_MINUTE = 12
    writers = Group.objects.create(name="Writers")
    alice.groups.add(writers)
    Quota.objects.create(group=writers, tokens_per_day=200_000)
    usage(alice, 0, prompt_tokens=40_000, completion_tokens=10_000)
    client.force_login(alice)
    page = client.get("/usage/").content.decode()
    assert "<strong>150,000</strong> of 200,000 tokens left today" in page
    assert "of 1,000,000 tokens left this month" in page
    assert 'max="200000" value="50000"' in page
    assert "At most 12 replies a minute." in page


def test_staff_see_that_they_are_exempt(client, root):
    client.force_login(root)
    page = client.get("/usage/").content.decode()
    assert "Staff are not held to quotas." in page
    assert 'href="/usage/team/"' in page


def test_the_usage_page_needs_a_login(client):
    response = client.get("/usage/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


# --- The team page -------------------------------------------------------------------------------
def test_the_team_page_and_its_csv_do_not_exist_for_members(client, alice):
    client.force_login(alice)
    assert client.get("/usage/team/").status_code == 404
    assert client.get("/usage/team.csv").status_code == 404
    client.logout()
    assert client.get("/usage/team/")["Location"].startswith("/login/")


@pytest.fixture
def team(alice, bob, root, character):
    writers = Group.objects.create(name="Writers")
    editors = Group.objects.create(name="Editors")
    alice.groups.add(writers, editors)
    bob.groups.add(writers)
    usage(alice, 0, character=character, prompt_tokens=3000, completion_tokens=1000, requests=4)
    usage(alice, 2, model="mistral/small", prompt_tokens=500, completion_tokens=500)
    usage(bob, 1, prompt_tokens=200, completion_tokens=100, estimated_tokens=50)
    usage(root, 0, prompt_tokens=10, completion_tokens=0)
    usage(bob, 100, prompt_tokens=7_777_777)  # before the period
    return writers, editors


@pytest.mark.parametrize("by", ["member", "group", "character", "model"])
def test_the_team_page_breaks_a_period_down_in_a_fixed_number_of_queries(
    client, root, team, by, django_assert_num_queries
):
    client.force_login(root)
    # The session and the member, the breakdown, and the days (chart and totals).
    with django_assert_num_queries(4):
        response = client.get("/usage/team/", {"by": by})
    assert response.status_code == 200
    rows = {row["name"]: row["n_tokens"] for row in response.context["table"]}
    expected = {
        "member": {"alice": 5000, "bob": 300, "root": 10},
        # A member in two groups counts in each; one in none is under "No group".
        "group": {"Writers": 5300, "Editors": 5000, "No group": 10},
        "character": {"Serika": 4000, "No character": 1310},
        "model": {"openai/gpt-4o-mini": 4310, "mistral/small": 1000},
    }[by]
    assert rows == expected
    assert response.context["totals"]["tokens"] == 5310  # each row once, whatever the breakdown
    assert "7,777,777" not in response.content.decode()


def test_the_team_page_sorts_by_any_column(client, root, team):
    client.force_login(root)

    def names(sort: str) -> list[str]:
        response = client.get("/usage/team/", {"sort": sort})
        return [row["name"] for row in response.context["table"]]

    assert names("-tokens") == ["alice", "bob", "root"]  # the default
    assert names("tokens") == ["root", "bob", "alice"]
    assert names("name") == ["alice", "bob", "root"]
    assert names("-estimated")[0] == "bob"
    assert names("nonsense") == ["alice", "bob", "root"]
    page = client.get("/usage/team/", {"sort": "requests"}).content.decode()
    assert 'aria-sort="ascending"' in page
    assert "sort=-requests" in page  # the column's link now sorts the other way


def test_the_team_page_takes_a_period_and_says_when_it_is_wrong(client, root, team):
    client.force_login(root)
    today = utc_today()
    response = client.get(
        "/usage/team/", {"start": (today - timedelta(days=1)).isoformat(), "end": today}
    )
    assert {row["name"] for row in response.context["table"]} == {"alice", "bob", "root"}
    assert len(response.context["chart"].bars) == 2
    wrong = client.get("/usage/team/", {"start": today.isoformat(), "end": "2000-01-01"})
    assert "The period must start before it ends." in wrong.content.decode()
    assert len(wrong.context["chart"].bars) == 30  # the last 30 days instead


@pytest.mark.django_db(transaction=True)
async def test_the_csv_export_streams_every_daily_row_of_the_period(
    async_client, root, team, character, monkeypatch
):
    monkeypatch.setattr(views, "CSV_PAGE_ROWS", 2)  # several pages of rows
    await DailyUsage.objects.filter(character_pk=character.pk).aupdate(
        character_name="=HYPERLINK(x)"
    )
    await async_client.aforce_login(root)
    response = await async_client.get("/usage/team.csv")
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv"
    assert response["Content-Disposition"].startswith('attachment; filename="usage-')
    body = b"".join([chunk async for chunk in response.streaming_content]).decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [row["member"] for row in rows] == ["alice", "bob", "alice", "root"]  # by day
    alice_today = rows[2]
    assert alice_today["groups"] == "Editors; Writers"
    assert alice_today["character"] == "'=HYPERLINK(x)"  # never a formula in a spreadsheet
    assert (alice_today["replies"], alice_today["prompt_tokens"]) == ("4", "3000")
    assert rows[1]["estimated_tokens"] == "50"
    assert "7777777" not in body
