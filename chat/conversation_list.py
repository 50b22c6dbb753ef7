"""A member's list of conversations: pinned first, then grouped by how recent they are."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.formats import date_format

from chat.models import Conversation

SIDEBAR_SIZE = 50  # the sidebar's newest conversations; the rest are on the list's pages
PAGE_SIZE = 50


@dataclass
class Group:
    """Conversations under one heading ("Pinned", "Today", "November 2026", …)."""

    label: str
    conversations: list[Conversation] = field(default_factory=list)


def age_label(when: datetime, now: datetime) -> str:
    """The heading of a conversation last active at `when`: Today, Yesterday, Previous 7 days,
    or its month."""
    day = timezone.localtime(when).date()
    today = timezone.localtime(now).date()
    if day >= today:
        return "Today"
    if day == today - timedelta(days=1):
        return "Yesterday"
    if day > today - timedelta(days=7):
        return "Previous 7 days"
    return date_format(timezone.localtime(when), "F Y")


def grouped(conversations: Iterable[Conversation], now: datetime | None = None) -> list[Group]:
    """`conversations` (in list order: pinned first, then newest) under their headings."""
    now = now or timezone.now()
    groups: list[Group] = []
    for conversation in conversations:
        label = "Pinned" if conversation.pinned_at else age_label(conversation.updated_at, now)
        if not groups or groups[-1].label != label:
            groups.append(Group(label))
        groups[-1].conversations.append(conversation)
    return groups


def sidebar(user) -> tuple[list[Group], bool]:
    """The sidebar's groups, and whether there are more conversations than it shows."""
    rows = list(Conversation.objects.for_user(user).listed()[: SIDEBAR_SIZE + 1])
    return grouped(rows[:SIDEBAR_SIZE]), len(rows) > SIDEBAR_SIZE
