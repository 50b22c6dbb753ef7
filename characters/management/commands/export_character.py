"""`manage.py export_character NAME --format png|json --out PATH`: export a character card."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from characters.import_export import export_card
from characters.models import Character


class Command(BaseCommand):
    help = "Export a character as a card PNG (V2 + V3 chunks) or V3 JSON file."

    def add_arguments(self, parser):
        parser.add_argument("name", help="The character's name (or its id, with --id).")
        parser.add_argument("--format", choices=["png", "json"], default="png")
        parser.add_argument(
            "--out", required=True, help="Output file, or an existing directory to write into."
        )
        parser.add_argument("--id", action="store_true", help="NAME is the character's id.")

    def handle(self, *args, **options):
        name = options["name"]
        if options["id"]:
            matches = list(Character.objects.filter(pk=int(name)) if name.isdigit() else [])
        else:
            matches = list(Character.objects.filter(name=name))
        if not matches:
            raise CommandError(f"No character named {name!r}.")
        if len(matches) > 1:
            ids = ", ".join(str(character.pk) for character in matches)
            raise CommandError(
                f"{len(matches)} characters are named {name!r} (ids {ids}); use --id."
            )
        content, _, filename = export_card(matches[0], options["format"])
        out = Path(options["out"])
        if out.is_dir():
            out = out / filename
        try:
            out.write_bytes(content)
        except OSError as exc:
            raise CommandError(f"Cannot write {out}: {exc}") from exc
        self.stdout.write(f"Wrote {out} ({len(content)} bytes)")
