"""Ending sessions closes their sockets at once, not only at their next frame."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from chat import events


@receiver(user_logged_out)
def close_sockets_of_ended_session(sender, request, user, **kwargs) -> None:
    if user is not None and request is not None and request.session.session_key:
        async_to_sync(events.session_ended)(user.pk, request.session.session_key)


@receiver(post_save, sender=get_user_model())
def close_sockets_of_deactivated_user(sender, instance, **kwargs) -> None:
    if not instance.is_active:
        user_id = instance.pk
        transaction.on_commit(lambda: async_to_sync(events.session_ended)(user_id, None))
