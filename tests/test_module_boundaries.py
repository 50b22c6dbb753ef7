"""The import rules of docs/architecture.md, read from the source: the card specification and
prompt assembly (`cardspec/`) import no Django and no app, `characters` never imports `chat`
(chat builds on characters, not the other way round), and only `chat/upstream*.py` talk HTTP."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ("accounts", "characters", "chat", "usage", "serika_web")


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def sources(package: str) -> list[Path]:
    found = sorted((ROOT / package).rglob("*.py"))
    assert found, package
    return found


def test_the_card_specification_imports_no_django_and_no_app():
    for path in sources("cardspec"):
        names = top_level(imported_modules(path))
        assert not names & {"django", "channels", *APPS}, path


def test_characters_never_imports_chat():
    for path in sources("characters"):
        assert "chat" not in top_level(imported_modules(path)), path


def test_only_the_upstream_modules_import_httpx():
    importers = {
        path.relative_to(ROOT).as_posix()
        for package in ("accounts", "cardspec", "characters", "chat", "usage", "serika_web")
        for path in sources(package)
        if top_level(imported_modules(path)) & {"httpx", "httpcore"}
    }
    assert importers <= {"chat/upstream.py", "chat/upstream_network.py"}
    assert "chat/upstream.py" in importers
