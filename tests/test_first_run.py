"""A fresh clone's first run: no SECRET_KEY, no data/, an empty site, the README's commands."""

from __future__ import annotations

import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from characters.models import Character
from serika_web.secret_key import KEY_FILE_NAME, load_or_create_secret_key

ROOT = Path(__file__).resolve().parent.parent


def first_run_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """A production environment as on a fresh machine: no key, no DEBUG, no database URL."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DEBUG", "SECRET_KEY", "DATABASE_URL", "REDIS_URL"))
        and k not in {"SECURE_HTTPS", "STATIC_ROOT", "MEDIA_ROOT"}
    }
    env.update(DJANGO_SETTINGS_MODULE="serika_web.settings", DATA_DIR=str(data_dir))
    env.update(extra)
    return env


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def print_secret_key(env: dict[str, str]) -> str:
    result = manage(
        "shell",
        "-v",
        "0",
        "-c",
        "from django.conf import settings; print(settings.SECRET_KEY)",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_missing_key_is_made_once_private_and_reused(tmp_path):
    data_dir = tmp_path / "new" / "data"
    key = load_or_create_secret_key(data_dir)
    path = data_dir / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) >= 50 and len(set(key)) >= 5
    assert load_or_create_secret_key(data_dir) == key
    assert sorted(p.name for p in data_dir.iterdir()) == [KEY_FILE_NAME]  # no temporary left


def _race(data_dir: str, barrier, results) -> None:
    barrier.wait()
    results.put(load_or_create_secret_key(Path(data_dir)))


def test_processes_starting_at_once_agree_on_one_key(tmp_path):
    # Forked processes released together by a barrier, as two daphnes started by one unit.
    context = multiprocessing.get_context("fork")
    count = 8
    barrier, results = context.Barrier(count), context.Queue()
    processes = [
        context.Process(target=_race, args=(str(tmp_path / "data"), barrier, results))
        for _ in range(count)
    ]
    for process in processes:
        process.start()
    keys = {results.get(timeout=30) for _ in processes}
    for process in processes:
        process.join(30)
    assert keys == {(tmp_path / "data" / KEY_FILE_NAME).read_text()}


def test_management_commands_run_with_no_key_and_no_data_folder(tmp_path):
    data_dir = tmp_path / "data"
    env = first_run_env(data_dir, ALLOWED_HOSTS="chat.example.com")
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout  # the generated key passes security.W009
    key_file = data_dir / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert print_secret_key(env) == key_file.read_text()


def test_the_readmes_first_steps_work_in_order_on_a_fresh_data_folder(tmp_path):
    env = first_run_env(tmp_path / "data")
    assert manage("migrate", "--noinput", "-v", "0", env=env).returncode == 0
    assert (tmp_path / "data" / "serika.sqlite3").is_file()  # the default database, made here
    admin = dict(
        DJANGO_SUPERUSER_USERNAME="admin",
        DJANGO_SUPERUSER_PASSWORD="a-long-admin-password",
        DJANGO_SUPERUSER_EMAIL="admin@example.com",
    )
    result = manage("createsuperuser", "--noinput", env={**env, **admin})
    assert result.returncode == 0, result.stderr
    first = manage("import_starter_character", env=env)
    assert first.returncode == 0, first.stderr
    assert "Imported the starter character 'Serika'" in first.stdout
    again = manage("import_starter_character", env=env)
    assert again.returncode == 0, again.stderr
    assert "not needed" in again.stdout


def test_an_explicit_secret_key_wins_and_no_key_file_is_made(tmp_path):
    env = first_run_env(tmp_path / "data", SECRET_KEY="an-explicit-key-" + "k" * 40)
    assert print_secret_key(env) == "an-explicit-key-" + "k" * 40
    assert not (tmp_path / "data" / KEY_FILE_NAME).exists()


def test_without_a_key_and_an_unusable_data_folder_the_app_refuses_to_start(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    env = first_run_env(tmp_path / "a-file" / "data", DATABASE_URL="sqlite://:memory:")
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "Set SECRET_KEY" in result.stderr


@pytest.mark.django_db
def test_the_starter_character_is_imported_once():
    call_command("import_starter_character")
    call_command("import_starter_character")
    starter = Character.objects.get()
    assert starter.name == "Serika"
    assert starter.first_mes.startswith("Hi {{user}}")
    assert starter.owner is None  # a site-wide character, visible to every member


@pytest.mark.django_db
def test_the_starter_character_stays_out_of_a_site_with_characters(character):
    call_command("import_starter_character")
    assert list(Character.objects.values_list("description", flat=True)) == ["A cheerful guide."]
