"""`manage.py check --deploy` says when several processes could not see each other."""

from __future__ import annotations

import pytest
from django.core.checks import Error
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from serika_web.checks import (
    SHARED_DATABASE_WITHOUT_SHARED_LAYER,
    shared_database_needs_a_shared_channel_layer,
)

POSTGRES = {"ENGINE": "django.db.backends.postgresql", "NAME": "serika"}
SQLITE = {"ENGINE": "django.db.backends.sqlite3", "NAME": "serika.sqlite3"}
IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
REDIS = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer"}}


def errors_with(settings, *, debug: bool, database: dict, layers: dict) -> list[Error]:
    settings.DEBUG = debug
    settings.DATABASES = {"default": database}
    settings.CHANNEL_LAYERS = layers
    return shared_database_needs_a_shared_channel_layer()


def test_production_on_postgresql_with_the_in_memory_layer_is_an_error(settings):
    (error,) = errors_with(settings, debug=False, database=POSTGRES, layers=IN_MEMORY)
    assert error.id == SHARED_DATABASE_WITHOUT_SHARED_LAYER
    assert isinstance(error, Error)
    assert "REDIS_URL" in error.hint


@pytest.mark.parametrize(
    ("debug", "database", "layers"),
    [
        (False, POSTGRES, REDIS),  # a team deployment
        (False, SQLITE, IN_MEMORY),  # the embedded mode: one process
        (True, POSTGRES, IN_MEMORY),  # a developer's machine
    ],
)
def test_other_combinations_pass(settings, debug, database, layers):
    assert errors_with(settings, debug=debug, database=database, layers=layers) == []


def test_check_deploy_reports_it(settings):
    settings.DEBUG = False
    settings.DATABASES = {**settings.DATABASES, "default": {**settings.DATABASES["default"]}}
    settings.DATABASES["default"]["ENGINE"] = "django.db.backends.postgresql"
    settings.CHANNEL_LAYERS = IN_MEMORY
    with pytest.raises(SystemCheckError, match=SHARED_DATABASE_WITHOUT_SHARED_LAYER):
        call_command("check", "--deploy", "--tag", "deployment")
    # Not a plain `check`: development and tests may run this way.
    call_command("check")


def test_error_reports_hide_settings_that_may_hold_a_password(rf, settings):
    from django.views.debug import get_default_exception_reporter_filter

    settings.EMAIL_URL = "smtp://mailer:hunter2@mail.example.com:587"
    settings.REDIS_URL = "redis://:hunter2@redis.example.com:6379/0"

    shown = get_default_exception_reporter_filter().get_safe_settings()

    assert "hunter2" not in repr(shown)
    assert shown["EMAIL_URL"] == shown["REDIS_URL"] == "********************"
    assert shown["SIGNUP"] == settings.SIGNUP
