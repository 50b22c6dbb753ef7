"""Token usage per member, day, character and model; quotas; and the reservations of replies
being written.

The verbs live here too, next to the tables they write:

- `reserve` checks a member's quotas and reserves what a reply about to start may use. It runs
  inside the send's own transaction (`chat.actions._member_writing`, after the member's lock),
  so sends from several tabs or processes at once see each other's reservations.
- `settle` replaces a reply's reservation with what the call really used, added to the day's
  aggregates, in the transaction that stores the reply's final state (or marks it interrupted).
- `record` adds a call that reserved nothing (e.g. a title) to the aggregates.

Pages read `DailyUsage` only: a few rows per member and day, never the messages.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, models
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from cardspec.prompt import estimate_tokens
from usage.accounting import (
    Charge,
    Limits,
    QuotaExceeded,
    Standing,
    estimate_prompt,
)

# A reservation stays this long after it is settled: the requests-per-minute quota counts the
# calls started in the last minute.
KEEP_SETTLED = timedelta(minutes=2)
# An unsettled reservation of a reply that no longer streams (only possible when something
# changed a reply's status outside `chat.actions`) is dropped after this long.
KEEP_ORPHANED = timedelta(days=1)


class Quota(models.Model):
    """Limits for one member, or for each member of one group (not for the group as a whole).

    A member is held to the lowest of their own limit and their groups' limits for each
    measure; where none is set, the site's default (`QUOTA_*`) holds."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="quota",
        verbose_name="member",
    )
    group = models.OneToOneField(
        "auth.Group", on_delete=models.CASCADE, null=True, blank=True, related_name="quota"
    )
    tokens_per_day = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Prompt and reply tokens per UTC day. Blank: not limited here (the default "
        "QUOTA_TOKENS_PER_DAY holds unless another quota of the member sets one); 0 allows none.",
    )
    tokens_per_month = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Prompt and reply tokens per calendar month (UTC). Blank: not limited here.",
    )
    requests_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Replies (sends, retries, regenerations, continues) started per minute. "
        "Blank: not limited here.",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False, group__isnull=True)
                | Q(user__isnull=True, group__isnull=False),
                name="quota_for_a_member_or_a_group",
                violation_error_message="Choose a member or a group (one, not both).",
            )
        ]

    def __str__(self) -> str:
        return f"Quota of {self.user or f'group {self.group}'}"


class DailyUsage(models.Model):
    """What one member's upstream calls used on one UTC day, per character and model.

    Incremented by one upsert statement per call (`_add_to_day`), never read-modify-written.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", verbose_name="member"
    )
    day = models.DateField()
    # The character's id (0: no character). Not a foreign key: usage outlives the character,
    # and a unique key with a nullable column would never conflict (NULLs are distinct).
    character_pk = models.PositiveBigIntegerField(default=0)
    # Its name as of the day's latest call, shown once the character is gone.
    character_name = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=200)
    requests = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    # The part of the prompt and completion tokens above that is our estimate (the upstream
    # sent no usage: a stopped or failed stream, or an API that never sends it).
    estimated_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "day", "character_pk", "model"], name="usage_daily_key"
            )
        ]
        indexes = [models.Index(fields=["day"], name="usage_daily_day")]
        verbose_name_plural = "daily usage"

    def __str__(self) -> str:
        return f"{self.user_id} {self.day} {self.model}"


class Reservation(models.Model):
    """An upstream call started by a reply (a send, retry, regenerate, continue or a question's
    edit): what it may use, counted against the member's quotas until it is settled.

    Only reservations of replies still streaming count: one whose process died stops counting
    when the sweep marks the reply interrupted, which also settles it."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    reply = models.ForeignKey("chat.Message", on_delete=models.CASCADE, related_name="+")
    character_pk = models.PositiveBigIntegerField(default=0)
    character_name = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=200)
    # The prompt's estimate (`accounting.estimate_prompt`) and all that is reserved: that plus
    # the reply's max_tokens (or QUOTA_REPLY_TOKENS).
    prompt_tokens = models.PositiveIntegerField()
    tokens = models.PositiveIntegerField()
    # Characters of the reply's text before this call (a continue's): not this call's output.
    text_offset = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["user", "created_at"], name="usage_reservation_recent")]

    def __str__(self) -> str:
        return f"Reservation of {self.tokens} tokens for reply {self.reply_id}"


# --- Quotas ------------------------------------------------------------------------------------
def is_exempt(user) -> bool:
    return bool(user.is_staff and settings.QUOTA_EXEMPT_STAFF)


def _table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


@functools.cache
def _standing_sql() -> str:
    """A member's limits (their own and their groups', the lowest set, else the site's
    default) and what counts against them, as one row. Parameters: `_standing_params`."""
    from chat.models import Message

    member_groups = _table(get_user_model().groups.through)
    # Table names from the models; every value is a parameter.
    return f"""
    SELECT COALESCE(q.per_day, NULLIF(%s, 0)) AS per_day,
           COALESCE(q.per_month, NULLIF(%s, 0)) AS per_month,
           COALESCE(q.per_minute, NULLIF(%s, 0)) AS per_minute,
           u.today, u.month, r.reserved, w.recent, w.oldest
    FROM
      (SELECT MIN(tokens_per_day) AS per_day, MIN(tokens_per_month) AS per_month,
              MIN(requests_per_minute) AS per_minute
         FROM {_table(Quota)}
        WHERE user_id = %s OR group_id IN (SELECT group_id FROM {member_groups} WHERE user_id = %s)
      ) q,
      (SELECT COALESCE(SUM(CASE WHEN day = %s THEN prompt_tokens + completion_tokens END), 0)
                AS today,
              COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS month
         FROM {_table(DailyUsage)} WHERE user_id = %s AND day >= %s
      ) u,
      (SELECT COALESCE(SUM(res.tokens), 0) AS reserved
         FROM {_table(Reservation)} res JOIN {_table(Message)} reply ON reply.id = res.reply_id
        WHERE res.user_id = %s AND res.settled_at IS NULL AND reply.status = %s
      ) r,
      (SELECT COUNT(*) AS recent, MIN(created_at) AS oldest
         FROM {_table(Reservation)} WHERE user_id = %s AND created_at > %s
      ) w
    """  # noqa: S608


def _standing_params(user_id: int, now: datetime) -> list:
    ops = connection.ops
    today = now.astimezone(UTC).date()
    return [
        settings.QUOTA_TOKENS_PER_DAY,
        settings.QUOTA_TOKENS_PER_MONTH,
        settings.QUOTA_REQUESTS_PER_MINUTE,
        user_id,
        user_id,
        ops.adapt_datefield_value(today),
        user_id,
        ops.adapt_datefield_value(today.replace(day=1)),
        user_id,
        "streaming",
        user_id,
        ops.adapt_datetimefield_value(now - timedelta(minutes=1)),
    ]


def standing(user_id: int, now: datetime | None = None) -> Standing:
    """The member's quotas and what counts against them, in one query: their own and their
    groups' limits, today's and this month's usage, what their replies being written reserve,
    and the calls started in the last minute."""
    now = now or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(_standing_sql(), _standing_params(user_id, now))
        per_day, per_month, per_minute, today, month, reserved, recent, oldest = cursor.fetchone()
    return Standing(
        limits=Limits(per_day, per_month, per_minute),
        today=int(today),
        this_month=int(month),
        reserved=int(reserved),
        recent_requests=int(recent),
        oldest_recent=_aware(oldest),
        now=now,
    )


_COLUMNS = (
    "user_id, reply_id, character_pk, character_name, model, prompt_tokens, tokens, text_offset, "
    "created_at"
)


@functools.cache
def _insert_sql() -> str:
    return f"INSERT INTO {_table(Reservation)} ({_COLUMNS}) VALUES ({', '.join(['%s'] * 9)})"  # noqa: S608


@functools.cache
def _insert_if_room_sql() -> str:
    """The reservation's INSERT, made only when the member's quotas leave room for it: the
    same arithmetic as `Standing.refusal`, in the statement itself, so a send that fits (the
    usual case) costs this one statement. Parameters: the row's 9 values, the standing's,
    then the tokens needed twice."""
    return f"""
    INSERT INTO {_table(Reservation)} ({_COLUMNS})
    SELECT {", ".join(["%s"] * 9)} FROM ({_standing_sql()}) s
     WHERE (s.per_minute IS NULL OR s.recent < s.per_minute)
       AND (s.per_day IS NULL OR s.today + s.reserved + %s <= s.per_day)
       AND (s.per_month IS NULL OR s.month + s.reserved + %s <= s.per_month)
    """  # noqa: S608


def _aware(value) -> datetime | None:
    # SQLite returns the column's text; PostgreSQL an aware datetime.
    if value is None or isinstance(value, datetime):
        return value
    parsed = parse_datetime(value)
    return parsed.replace(tzinfo=UTC) if parsed and parsed.tzinfo is None else parsed


# --- Reserve, settle, record -------------------------------------------------------------------
def reserve(conversation, reply, inputs, *, text_offset: int = 0) -> None:
    """Check `conversation`'s owner's quotas for `reply`, about to be generated from `inputs`,
    and reserve what it may use: the prompt's estimate plus its max_tokens (else
    `QUOTA_REPLY_TOKENS`).

    Call inside the member's write transaction, after the reply is stored: a refusal raises
    `QuotaExceeded`, which rolls everything back. Staff are exempt with `QUOTA_EXEMPT_STAFF`,
    but their calls are reserved (and so settled and counted) all the same. One statement
    when the reply fits; a refusal reads the standing again to say why. Raw SQL: on the
    send's path the ORM's save costs more than the statement.
    """
    owner = conversation.owner
    now = timezone.now()
    prompt = estimate_prompt(inputs)
    need = prompt + (inputs.max_tokens or settings.QUOTA_REPLY_TOKENS)
    character = conversation.character
    row = [
        owner.pk,
        reply.pk,
        character.pk if character else 0,
        character.name[:200] if character else "",
        inputs.model[:200],
        prompt,
        need,
        text_offset,
        connection.ops.adapt_datetimefield_value(now),
    ]
    with connection.cursor() as cursor:
        if is_exempt(owner):
            cursor.execute(_insert_sql(), row)
            return
        cursor.execute(_insert_if_room_sql(), [*row, *_standing_params(owner.pk, now), need, need])
        if cursor.rowcount == 1:
            return
    refusal = standing(owner.pk, now).refusal(need)
    raise QuotaExceeded(refusal or "Your quota leaves no room for this reply now; try again soon.")


_SETTLED = "user_id, character_pk, character_name, model, prompt_tokens, text_offset"


@functools.cache
def _settle_sql() -> str:
    table = _table(Reservation)
    return f"""
    UPDATE {table} SET settled_at = %s
     WHERE id = (SELECT MAX(id) FROM {table} WHERE reply_id = %s AND settled_at IS NULL)
       AND settled_at IS NULL
    RETURNING {_SETTLED}
    """  # noqa: S608


def _take_open_reservation(reply_id: int, now: datetime) -> tuple | None:
    """Mark reply `reply_id`'s open reservation settled and return its fields (`_SETTLED`),
    or None when it has none. One UPDATE ... RETURNING (PostgreSQL, SQLite >= 3.35, the same
    versions Django returns inserted columns from); else a read, then the UPDATE."""
    if connection.features.can_return_columns_from_insert:
        with connection.cursor() as cursor:
            cursor.execute(_settle_sql(), [connection.ops.adapt_datetimefield_value(now), reply_id])
            return cursor.fetchone()
    row = (
        Reservation.objects.filter(reply_id=reply_id, settled_at=None)
        .order_by("-pk")
        .values_list("pk", *_SETTLED.split(", "))
        .first()
    )
    if row is None or not Reservation.objects.filter(pk=row[0], settled_at=None).update(
        settled_at=now
    ):
        return None
    return row[1:]


def settle(reply_id: int, charge: Charge | None = None, *, text: str = "") -> Charge | None:
    """Replace reply `reply_id`'s open reservation with what the call used (`charge`; None:
    estimated from the reservation's prompt estimate and the call's part of `text`, the reply's
    stored text) and add it to today's aggregates. Returns the charge, or None when there was
    nothing to settle (settled already, or never reserved).

    Call in the transaction that stores the reply's final state, after its UPDATE: on
    PostgreSQL that row lock orders the owner's final save and another process's sweep, and the
    reservation is settled once, by whichever comes first.
    """
    now = timezone.now()
    taken = _take_open_reservation(reply_id, now)
    if taken is None:
        return None
    user_id, character_pk, character_name, model, prompt_tokens, text_offset = taken
    if charge is None:
        completion = estimate_tokens(text[text_offset:])
        charge = Charge(prompt_tokens, completion, prompt_tokens + completion)
    _add_to_day(user_id, now, character_pk, character_name, model, charge)
    return charge


def record(user_id: int, character, model: str, charge: Charge) -> None:
    """Add an upstream call that reserved nothing (a conversation's title, say) to today's
    aggregates of member `user_id`, with `character` (or None) and `model`."""
    _add_to_day(
        user_id,
        timezone.now(),
        character.pk if character else 0,
        character.name if character else "",
        model,
        charge,
    )


@functools.cache
def _add_sql() -> str:
    table = _table(DailyUsage)
    counters = ["requests", "prompt_tokens", "completion_tokens", "estimated_tokens"]
    increments = ", ".join(f"{c} = {table}.{c} + EXCLUDED.{c}" for c in counters)
    # Same statement on PostgreSQL and SQLite (>= 3.24): one upsert, never a read then a write.
    # Names from the model; every value is a parameter.
    return f"""
    INSERT INTO {table} (user_id, day, character_pk, character_name, model, {", ".join(counters)})
    VALUES (%s, %s, %s, %s, %s, 1, %s, %s, %s)
    ON CONFLICT (user_id, day, character_pk, model)
    DO UPDATE SET {increments}, character_name = EXCLUDED.character_name
    """  # noqa: S608


def _add_to_day(
    user_id: int, now: datetime, character_pk: int, character_name: str, model: str, charge: Charge
) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            _add_sql(),
            [
                user_id,
                connection.ops.adapt_datefield_value(now.astimezone(UTC).date()),
                character_pk,
                character_name[:200],
                model[:200],
                charge.prompt_tokens,
                charge.completion_tokens,
                charge.estimated_tokens,
            ],
        )


def purge_reservations(now: datetime | None = None) -> int:
    """Drop reservations no quota needs any more: settled over `KEEP_SETTLED` ago, or left
    unsettled by a reply that no longer streams for `KEEP_ORPHANED`. Returns how many."""
    now = now or timezone.now()
    deleted, _ = (
        Reservation.objects.filter(
            Q(settled_at__isnull=False, created_at__lt=now - KEEP_SETTLED)
            | Q(settled_at__isnull=True, created_at__lt=now - KEEP_ORPHANED)
        )
        .exclude(settled_at__isnull=True, reply__status="streaming")
        .delete()
    )
    return deleted
