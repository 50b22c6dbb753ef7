"""Ending sessions closes their sockets at once, not only at their next frame: logout,
deactivation and a password change (which ends the user's other sessions)."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from chat import events


@receiver(user_logged_out)
def close_sockets_of_ended_session(sender, request, user, **kwargs) -> None:
    if user is not None and request is not None and request.session.session_key:
        async_to_sync(events.session_ended)(user.pk, request.session.session_key)


@receiver(pre_save, sender=get_user_model())
def note_password_change(sender, instance, update_fields=None, **kwargs) -> None:
    # Compared with the stored hash rather than spotted in set_password: an admin's form, the
    # changepassword command and a hasher upgrade at login all change the hash, and each one
    # invalidates the user's other sessions (their session hash no longer verifies).
    instance._password_changed = False
    if instance._state.adding or (update_fields is not None and "password" not in update_fields):
        return
    stored = sender.objects.filter(pk=instance.pk).values_list("password", flat=True).first()
    instance._password_changed = stored is not None and stored != instance.password


@receiver(post_save, sender=get_user_model())
def close_sockets_of_ended_sessions(sender, instance, **kwargs) -> None:
    # A changed password closes every socket of the user, including the tab that changed it:
    # Django cycles that session's key (update_session_auth_hash), so its sockets, bound to the
    # old key, could not act any more anyway; reloading the page opens one on the new key.
    if not instance.is_active or getattr(instance, "_password_changed", False):
        user_id = instance.pk
        transaction.on_commit(lambda: async_to_sync(events.session_ended)(user_id, None))
