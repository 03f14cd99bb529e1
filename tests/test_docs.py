"""The docs keep up with the code: every setting, route and doc page a user is pointed to."""

from __future__ import annotations

import re
import subprocess
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


# -- the repository stands on its own --------------------------------------------------------

# Places outside the checkout a file might name: a sibling folder, or this machine's layout.
OUTSIDE = re.compile(r"\.\./" + r"shared\b|\bshared/(?:seeds|fixtures|docs)\b|/" + r"work/")
SOURCES = ("proxy", "migrations", "tests", "bench", "deploy", "docs", "scripts", ".ci")


def _text_files() -> list[Path]:
    top = [ROOT / name for name in ("README.md", "pyproject.toml", "Dockerfile", "alembic.ini")]
    found = [p for d in SOURCES for p in sorted((ROOT / d).rglob("*")) if p.is_file()]
    ignored = _git_ignored(found)  # a local bench run's results name this machine's paths
    return top + [
        p for p in found if "__pycache__" not in p.parts and p.suffix != ".pyc" and p not in ignored
    ]


def _git_ignored(paths: list[Path]) -> set[Path]:
    """The paths .gitignore keeps out of the repository (none outside a git checkout)."""
    if not (ROOT / ".git").exists() or not paths:
        return set()
    names = "\0".join(str(p.relative_to(ROOT)) for p in paths)
    done = subprocess.run(
        ["git", "check-ignore", "-z", "--stdin"], cwd=ROOT, input=names.encode(),
        capture_output=True, check=False,
    )  # fmt: skip
    return {ROOT / name for name in done.stdout.decode().split("\0") if name}


def test_nothing_names_a_path_outside_the_repository() -> None:
    named = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in _text_files()
        for n, line in enumerate(path.read_text("utf-8", errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert named == []


def test_every_protocol_section_cited_exists() -> None:
    """Code cites docs/gemini-protocol.md by number (§3, §2-§6) or by name (, "Usage")."""
    protocol = (ROOT / "docs" / "gemini-protocol.md").read_text()
    headings = re.findall(r"^## (\d+)\. (.*)$", protocol, re.M)
    numbers = {int(n) for n, _ in headings}
    cited, named = set(), set()
    for path in _text_files():
        text = path.read_text(errors="replace")
        for ref in re.findall(r"gemini-protocol\.md §([\d§ -]+)", text):
            bounds = [int(n) for n in re.findall(r"\d+", ref)]
            cited |= set(range(bounds[0], bounds[-1] + 1))
        named |= set(re.findall(r'gemini-protocol\.md, "([^"]+)"', text))
    assert cited and cited <= numbers, sorted(cited - numbers)
    titles = [title.lower() for _, title in headings]
    assert [n for n in named if not any(n.lower() in t for t in titles)] == []


def test_every_seed_is_described() -> None:
    seeds = ROOT / "docs" / "seeds"
    readme = (seeds / "README.md").read_text()
    names = sorted(p.name for p in seeds.glob("*.txt"))
    assert names and [n for n in names if f"`{n}`" not in readme] == []
