"""`manage.py import_starter_character`: the shipped starter card, on a site with no characters."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand
from django.db import transaction

from characters.import_export import import_card_file
from characters.models import Character

STARTER_CARD = Path(__file__).resolve().parent.parent.parent / "starter" / "serika.json"


class Command(BaseCommand):
    help = "Import the starter character (Serika) when there are no characters yet."

    def handle(self, *args, **options) -> None:
        # One transaction, so that two first runs at once cannot both find the site empty on
        # SQLite (IMMEDIATE transactions) and a failed import leaves nothing half made.
        with transaction.atomic():
            if Character.objects.exists():
                self.stdout.write("Characters exist already: the starter character is not needed.")
                return
            character, _ = import_card_file(STARTER_CARD.read_bytes(), STARTER_CARD.name)
        self.stdout.write(f"Imported the starter character {character.name!r} (id {character.pk}).")
