"""``tuplehub.client`` is the client's one public surface, and the docs keep to it (issue 13).

Its ``__all__``, the lazy table that resolves the names, the imports type checkers read, and the
table of docs/client.md name the same things; the docs import only from ``tuplehub.client``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import tuplehub.client as client

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _type_checking_imports() -> dict[str, str]:
    """Name -> module of the ``if TYPE_CHECKING:`` imports of client/__init__.py."""
    tree = ast.parse((ROOT / "client" / "__init__.py").read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    return {alias.name: node.module or "" for node in block.body if isinstance(node, ast.ImportFrom)
            for alias in node.names}


def _doc_imports() -> list[tuple[str, str, list[str]]]:
    """(doc, module, names) of every import of a tuplehub module in the docs' Python blocks."""
    found = []
    for doc in DOCS:
        for block in CODE_BLOCK.findall(doc.read_text(encoding="utf-8")):
            for node in ast.walk(ast.parse(block)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tuplehub"):
                    found.append((doc.name, node.module or "", [alias.name for alias in node.names]))
                elif isinstance(node, ast.Import):
                    found += [(doc.name, alias.name, []) for alias in node.names if alias.name.startswith("tuplehub")]
    return found


def test_all_is_sorted_and_is_the_lazy_table() -> None:
    assert client.__all__ == sorted(set(client.__all__))
    assert set(client.__all__) == set(client._HOMES)


def test_type_checkers_see_the_names_the_package_resolves() -> None:
    assert _type_checking_imports() == client._HOMES


def test_every_name_resolves_to_what_its_module_defines() -> None:
    for name in client.__all__:
        value = getattr(client, name)
        assert value is getattr(__import__(client._HOMES[name], fromlist=[name]), name)
    assert set(client.__all__) <= set(dir(client))


def test_the_docs_import_only_public_names_from_tuplehub_client() -> None:
    imports = _doc_imports()
    assert imports, "no doc imports tuplehub.client: the pattern no longer finds the code blocks"
    assert [(doc, module) for doc, module, _ in imports if module != "tuplehub.client"] == []
    assert [(doc, name) for doc, _, names in imports for name in names if name not in client.__all__] == []


def test_docs_client_md_lists_every_public_name() -> None:
    text = (ROOT / "docs" / "client.md").read_text(encoding="utf-8")
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| for ")]
    listed = {name for line in table for name in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", line.split("|")[2])}
    assert sorted(listed - set(client.__all__)) == []
    assert sorted(set(client.__all__) - listed) == []



def test_handles_ask_the_server_through_the_one_request_helper() -> None:
    """No client module sends a request on the client's connection and raises its problem by hand:
    client/base.py does. Streamed answers, resent streamed bodies and answers read by status first (signing
    out of a dead session) still call ``raise_for_problem``."""
    connection = r"(?:self\.)?_?http\.(?:get|post|put|patch|delete|request)\("
    between = r"(?:(?!.*status_code).*\n){0,3}?"  # a few lines, none of which looks at the status itself
    by_hand = re.compile(rf"(\w+) = {connection}{between}\s*raise_for_problem\(\1\)|raise_for_problem\({connection}")
    offenders = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "client").rglob("*.py"))
                 if path.name != "base.py" and by_hand.search(path.read_text(encoding="utf-8"))]
    assert offenders == []
