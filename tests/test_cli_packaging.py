"""What a wheel ships (issue 11, trial "Packaging"): a licence text matching the SPDX metadata, and type marks."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_licence_file_matches_the_spdx_metadata() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"  # an SPDX expression, not the deprecated table
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text


def test_the_typed_packages_are_marked_and_shipped() -> None:
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for package, folder in (("tuplehub.client", "client"), ("tuplehub.storage", "storage")):
        assert (ROOT / folder / "py.typed").exists()
        assert package_data[package] == ["py.typed"]
