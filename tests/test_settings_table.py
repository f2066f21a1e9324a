"""The settings table of docs/architecture.md names every setting, and nothing else (issue 13).

A setting is a field of :class:`~tuplehub.storage.settings.Settings`, read from ``TUPLEHUB_<FIELD>``;
the section's "Client side" paragraph names the variables the client reads itself
(``TUPLEHUB_CONFIG_DIR`` through :mod:`tuplehub.storage.paths`).
"""

from __future__ import annotations

import re
from pathlib import Path

from tuplehub.storage.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"`(TUPLEHUB_[A-Z0-9_]+)`")


def _section() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    return text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]


def _table_names() -> set[str]:
    return {name for line in _section().splitlines() if line.startswith("|") for name in NAME.findall(line)}


def _client_names() -> set[str]:
    paragraph = _section().split("\nClient side:", 1)[1].split("\n\n", 1)[0]
    return set(NAME.findall(paragraph))


def test_every_setting_is_in_the_table() -> None:
    settings = {f"TUPLEHUB_{field.upper()}" for field in Settings.model_fields}
    assert sorted(settings - _table_names()) == []


def test_the_table_names_only_settings() -> None:
    settings = {f"TUPLEHUB_{field.upper()}" for field in Settings.model_fields}
    assert sorted(_table_names() - settings) == []


def test_the_client_side_variables_are_read_somewhere() -> None:
    source = "\n".join(path.read_text(encoding="utf-8") for folder in ("client", "storage")
                       for path in (ROOT / folder).rglob("*.py"))
    names = _client_names()
    assert names >= {"TUPLEHUB_URL", "TUPLEHUB_TOKEN"}
    assert sorted(name for name in names if f'"{name}"' not in source) == []
