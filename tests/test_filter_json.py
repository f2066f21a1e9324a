"""A filter written as JSON is read in one place (issue 13): the API's query parameter and the CLI's options."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuplehub.client.cli.options import TUPLE_FILTER_EXAMPLE
from tuplehub.client.cli.output import parse_filter
from tuplehub.storage.errors import InvalidFilter
from tuplehub.storage.filters.language import F, parse_filter_json

GOOD = '{"op": "gt", "field": "reward", "value": 0}'
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text", [None, "", "  \n"])
def test_blank_text_is_no_filter(text: str | None) -> None:
    assert parse_filter_json(text) is None
    assert parse_filter(text, "--where") is None


def test_the_api_and_the_cli_read_the_same_filter() -> None:
    assert parse_filter_json(GOOD) == parse_filter(GOOD, "--where") == (F.reward > 0)


def test_a_malformed_filter_names_where_it_is_wrong() -> None:
    with pytest.raises(InvalidFilter, match=r"^gt\.field: Field required$") as api:
        parse_filter_json('{"op": "gt"}')
    assert "hint" not in api.value.extra  # the API's problem body is unchanged
    with pytest.raises(InvalidFilter, match=r"^--where: Field required \(expected JSON like ") as cli:
        parse_filter('{"op": "gt"}', "--where")
    assert TUPLE_FILTER_EXAMPLE in cli.value.detail
    assert cli.value.extra["hint"] == "the filter language is in docs/tuples-and-filters.md"


def test_no_other_module_parses_filter_json() -> None:
    readers = sorted(str(path.relative_to(ROOT)) for folder in ("api", "client", "storage", "workers")
                     for path in (ROOT / folder).rglob("*.py") if "TypeAdapter(Filter)" in path.read_text("utf-8"))
    assert readers == ["storage/filters/language.py"]
