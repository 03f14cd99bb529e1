"""The docs keep up with the code: every setting, route and doc page a user is pointed to."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.app import create_app
from proxy.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def env_name(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    return "GEMINI_API_KEY" if alias else f"GEMINI_METER_{field.upper()}"


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_in_the_readme_table(field: str) -> None:
    name = env_name(field)
    row = re.search(rf"^\| `{name}` \|(.*)$", README, re.M)
    assert row, f"{name} has no row in the README's configuration table"


def test_the_readme_table_has_no_stale_setting() -> None:
    documented = set(re.findall(r"^\| `(GEMINI_[A-Z_]+)` \|", README, re.M))
    assert documented == {env_name(f) for f in Settings.model_fields}


def test_every_public_route_is_in_the_readme() -> None:
    app = create_app(Settings())
    paths = {getattr(r, "path", "") for r in app.routes}
    for path in paths:
        if path.startswith("/admin"):
            continue  # documented in docs/admin-api.md
        shown = path.replace("{target:path}", "").replace("{model}", "").rstrip("/")
        assert shown.split("/")[-1] in README, f"route {path} is not mentioned in the README"


def test_linked_docs_exist() -> None:
    for link in re.findall(r"\]\(((?:docs/)[^)#]+)\)", README):
        assert (ROOT / link).is_file(), f"README links to missing {link}"
