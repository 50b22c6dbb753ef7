"""What importing and exporting a big card PNG costs, in-process (issue 14 item 1).

Cards (built by `tests.card_corpus`, deterministic):

- **risu-3.0MB**: a RisuAI-style PNG, `ccv3` and its V2 `chara` copy with a 34-entry lorebook,
  over a 1400 x 1400 RGB picture that compresses like a detailed illustration (about 3.0 MB in
  all: the issue's 3.0 MB RisuAI card);
- **chub-1.3MB**: a V2 `chara`-only card over a 768 x 1152 RGB picture (about 1.3 MB: a typical
  chub download).

For each card: `characters.import_export.import_card_file` (read, decode, clean the avatar,
save the row and the files) and `export_card(..., "png")`, wall and CPU time, median of `--runs`
runs after one warm-up run. The machine is shared, so the CPU time (this process only) is the
steadier figure. Runs on whatever code is in the tree (so `git archive` an older commit, add this
file and `tests/card_corpus.py`, to measure "before"), on a fresh SQLite database and media
directory of its own:

    python -m bench.card_import_bench [--runs 9]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time


def _cards() -> dict[str, bytes]:
    from tests.card_corpus import (
        card_png,
        photo_png,
        risu_card,
        risu_v2_copy,
        v2_card,
    )

    risu = risu_card()
    return {
        "risu-3.0MB": card_png(chara=risu_v2_copy(risu), ccv3=risu, image=photo_png((1400, 1400))),
        "chub-1.3MB": card_png(chara=v2_card(), image=photo_png((768, 1152))),
    }


def _timed(function, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def measure(name: str, data: bytes, runs: int) -> dict:
    from characters.import_export import export_card, import_card_file

    imports: list[tuple[float, float]] = []
    exports: list[tuple[float, float]] = []
    for run in range(runs + 1):
        (character, _), wall, cpu = _timed(import_card_file, data, f"{name}.png")
        _, export_wall, export_cpu = _timed(export_card, character, "png")
        if run:  # the first run warms up imports and caches
            imports.append((wall, cpu))
            exports.append((export_wall, export_cpu))
    return {
        "file_mb": round(len(data) / 1e6, 2),
        "import_wall_ms": _median_ms([wall for wall, _ in imports]),
        "import_cpu_ms": _median_ms([cpu for _, cpu in imports]),
        "import_wall_ms_all": [round(wall * 1000) for wall, _ in imports],
        "export_wall_ms": _median_ms([wall for wall, _ in exports]),
        "export_cpu_ms": _median_ms([cpu for _, cpu in exports]),
        "stored_avatar_mb": round(character.avatar.size / 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="card-import-bench-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "serika_web.settings")
    os.environ["DEBUG"] = "true"
    os.environ["DATABASE_URL"] = f"sqlite:///{directory}/bench.sqlite3"
    os.environ["MEDIA_ROOT"] = os.path.join(directory, "media")
    os.environ["ALLOWED_HOSTS"] = "testserver,127.0.0.1"
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    cards = _cards()
    print(
        json.dumps({name: measure(name, data, args.runs) for name, data in cards.items()}, indent=1)
    )


if __name__ == "__main__":
    main()
