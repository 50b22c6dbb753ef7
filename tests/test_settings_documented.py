"""Every setting read from the environment is in `.env.example` and in README's table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ROOT / "serika_web" / "settings.py"


def settings_read_from_the_environment(source: str) -> set[str]:
    """Names passed to `env(...)` or any `env.<cast>(...)` call (`env.str`, `env.db`, ...)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        on_env = (isinstance(func, ast.Name) and func.id == "env") or (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "env"
        )
        first = node.args[0]
        if on_env and isinstance(first, ast.Constant) and isinstance(first.value, str):
            names.add(first.value)
    return names


def env_example_names() -> set[str]:
    """Variables shown in `.env.example`, commented out (`# NAME=default`) or not."""
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def readme_table_names() -> set[str]:
    """Variables named in the first column of README's configuration table."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", line.split("|")[1]))
    return names


def test_the_parser_finds_each_kind_of_env_read():
    source = (
        'A = env.str("A", default="")\nB = env("B")\nC = env.db("C")\n'
        'D = {"x": env.dict("D", default={})}\nenviron.Env.read_env(path)\nE = other.str("E")\n'
    )
    assert settings_read_from_the_environment(source) == {"A", "B", "C", "D"}


def test_every_setting_is_in_the_env_example():
    read = settings_read_from_the_environment(SETTINGS.read_text())
    assert len(read) > 20, read  # the parser found the settings at all
    assert read - env_example_names() == set()


def test_every_setting_has_a_row_in_the_readmes_configuration_table():
    read = settings_read_from_the_environment(SETTINGS.read_text())
    assert read - readme_table_names() == set()
