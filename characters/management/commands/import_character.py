"""`manage.py import_character PATH...`: import character card files (PNG, JSON, CHARX)."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from cardspec.cards import MAX_CARD_FILE_BYTES, CardError
from characters.import_export import import_card_file


class Command(BaseCommand):
    help = "Import character cards (PNG, JSON or CHARX); each file becomes a new character."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="PATH", help="Card files to import.")
        parser.add_argument(
            "--owner",
            metavar="USERNAME",
            help="Owner of the imported characters (default: none, a site-wide character).",
        )

    def handle(self, *args, **options):
        owner = None
        if options["owner"]:
            user_model = get_user_model()
            try:
                owner = user_model.objects.get(**{user_model.USERNAME_FIELD: options["owner"]})
            except user_model.DoesNotExist:
                raise CommandError(f"No user named {options['owner']!r}.") from None
        failures = 0
        for name in options["paths"]:
            path = Path(name)
            try:
                if path.stat().st_size > MAX_CARD_FILE_BYTES:
                    raise CardError("The file is too large for a character card.")
                character, warnings = import_card_file(path.read_bytes(), path.name, owner)
            except (OSError, CardError) as exc:
                failures += 1
                self.stderr.write(f"{name}: {exc}")
                continue
            self.stdout.write(f"{name}: imported {character.name!r} (id {character.pk})")
            for warning in warnings:
                self.stdout.write(f"  note: {warning}")
        if failures:
            raise CommandError(f"{failures} of {len(options['paths'])} file(s) not imported.")
