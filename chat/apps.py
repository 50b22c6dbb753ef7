from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        from chat import search, signals  # noqa: F401  (signals connects the receivers)
        from serika_web import checks  # noqa: F401  (registers the deployment checks)

        # A SQLite table rebuild in a later migration drops the search index's triggers.
        post_migrate.connect(search.ensure_index, sender=self)
