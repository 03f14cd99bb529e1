"""The package as it ships: the wheel the Dockerfile builds carries the code, its data and the
migrations, and a non-editable install of it migrates fresh databases from anywhere.

No Docker engine runs here, so the image's build stage is replayed: a temporary directory gets
exactly what the Dockerfile COPYs (after .dockerignore), and the wheel is built from it offline.
"""

from __future__ import annotations

import shlex
import shutil
import sqlite3
import subprocess
import sys
import tomllib
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from proxy.db.engine import make_engine
from proxy.db.migrate import alembic_config
from proxy.db.tables import Base
from tests.conftest import empty_pg_database, run_sync
from tests.test_deploy import clean_env, dockerfile, dockerignore_allows

ROOT = Path(__file__).resolve().parents[1]
# Offline: dependencies and the build backend come from this machine's environment.
PIP_OFFLINE = ["--no-deps", "--no-build-isolation", "--no-index", "--quiet"]


def isolated_env(**extra: str) -> dict[str, str]:
    """No proxy settings, and no PYTHONPATH that could put a checkout's proxy first."""
    env = clean_env(**extra)
    env.pop("PYTHONPATH", None)
    return env


def build_stage() -> list[tuple[str, str]]:
    """The Dockerfile's first stage: the one that builds the wheels."""
    steps = dockerfile()
    starts = [i for i, (op, _) in enumerate(steps) if op == "FROM"]
    return steps[starts[0] : starts[1] if len(starts) > 1 else None]


def _copy(source: Path, target: Path) -> None:
    for path in [source] if source.is_file() else sorted(source.rglob("*")):
        relative = path.relative_to(ROOT).as_posix()
        if path.is_file() and dockerignore_allows(relative):
            dest = target if path == source else target / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)


def replay_build_context(workdir: Path) -> Path:
    """Copy into ``workdir`` what the build stage COPYs, as Docker would; return the directory
    its ``pip wheel`` runs in (the stage's WORKDIR)."""
    stage = build_stage()
    [wheel_run] = [args for op, args in stage if op == "RUN" and "pip wheel" in args]
    assert wheel_run.split()[-1] == ".", wheel_run  # the wheel is built of WORKDIR itself
    for op, args in stage:
        if op != "COPY":
            continue
        *sources, dest = [a for a in shlex.split(args) if not a.startswith("--")]
        assert "--from=" not in args and not Path(dest).is_absolute(), args
        target = workdir / dest
        for source in sources:
            assert (ROOT / source).exists(), f"the Dockerfile copies a missing {source}"
            many = len(sources) > 1 or dest.endswith("/")
            _copy(ROOT / source, target / Path(source).name if many else target)
    return workdir


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build_context = replay_build_context(tmp_path_factory.mktemp("docker-build") / "src")
    out = tmp_path_factory.mktemp("wheels")
    pip = [sys.executable, "-m", "pip", "wheel", *PIP_OFFLINE, "--wheel-dir", str(out), "."]
    subprocess.run(pip, cwd=build_context, check=True, timeout=300, env=isolated_env())
    [built] = out.glob("gemini_meter-*.whl")
    return built


def _tracked(top: str) -> list[Path]:
    return [
        p
        for p in sorted((ROOT / top).rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    ]


def test_the_wheel_built_from_the_docker_context_carries_code_data_and_migrations(
    wheel: Path,
) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {p.relative_to(ROOT).as_posix() for p in _tracked("proxy")}
    # migrations/ ships inside the package: that is where an installed copy looks for it.
    expected |= {f"proxy/{p.relative_to(ROOT).as_posix()}" for p in _tracked("migrations")}
    assert {"proxy/migrations/env.py", "proxy/migrations/script.py.mako"} <= expected
    assert any(n.startswith("proxy/migrations/versions/0001_") for n in expected)
    assert sorted(expected - names) == []


def _package_name(directory: Path) -> str:
    parts = directory.relative_to(ROOT).parts
    return ".".join(("proxy", *parts) if parts[0] == "migrations" else parts)


def test_every_package_is_listed_for_the_wheel() -> None:
    """pyproject.toml lists the packages by hand (a mapped migrations/ rules out discovery)."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"proxy.migrations": "migrations"}
    on_disk = {
        _package_name(d)
        for top in ("proxy", "migrations")
        for d in [ROOT / top, *(ROOT / top).rglob("*")]
        if d.is_dir() and "__pycache__" not in d.parts and any(f.is_file() for f in d.iterdir())
    }
    missing = sorted(on_disk - set(setuptools["packages"]))
    assert missing == [], f"add {missing} to [tool.setuptools] packages in pyproject.toml"


def test_revisions_spell_out_their_column_types() -> None:
    """An old revision must mean the same thing after tables.py changes: no live imports."""
    revisions = sorted((ROOT / "migrations" / "versions").glob("*.py"))
    assert revisions
    for revision in revisions:
        source = revision.read_text()
        assert "import proxy" not in source and "from proxy" not in source, revision.name


# -- a non-editable install, migrating fresh databases ------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with `pip install .` of the Docker build context; its bin directory.

    The venv sees this machine's site-packages (dependencies, offline), where an editable
    gemini-meter may be installed too: the wheel's own copy must be the one that runs.
    """
    build_context = replay_build_context(tmp_path_factory.mktemp("docker-build") / "src")
    home = tmp_path_factory.mktemp("venv")
    venv.create(home / "venv", system_site_packages=True, with_pip=False)
    python = home / "venv" / "bin" / "python"
    install = [str(python), "-m", "pip", "install", *PIP_OFFLINE, "."]
    subprocess.run(install, cwd=build_context, check=True, timeout=300, env=isolated_env())
    # The wheel's own proxy, not the checkout's (cwd) nor the editable install's.
    probe = "import proxy.db.migrate as m; print(m.__file__); print(m.script_location())"
    found = subprocess.run(
        [str(python), "-c", probe],
        cwd=home,
        env=isolated_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    site = home / "venv" / "lib"
    assert all(Path(p).is_relative_to(site) for p in found), found
    assert Path(found[1]).name == "migrations" and Path(found[1]).parent.name == "proxy"
    return python.parent


def _head() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def _db_upgrade(bin_dir: Path, url: str, cwd: Path) -> None:
    done = subprocess.run(
        [str(bin_dir / "gemini-meter"), "db", "upgrade"],
        cwd=cwd,
        env=isolated_env(GEMINI_METER_DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "latest revision" in done.stdout


def test_installed_wheel_migrates_a_fresh_sqlite_file(installed: Path, tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    _db_upgrade(installed, f"sqlite+aiosqlite:///{path}", tmp_path)
    with sqlite3.connect(path) as conn:
        [(version,)] = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert version == _head()
    assert set(Base.metadata.tables) <= tables


@pytest.fixture
def fresh_pg_database() -> Iterator[str]:
    with empty_pg_database("gemini_meter_wheel") as url:
        yield url


def test_installed_wheel_migrates_a_fresh_postgresql_database(
    installed: Path, fresh_pg_database: str, tmp_path: Path
) -> None:
    _db_upgrade(installed, fresh_pg_database, tmp_path)

    async def read() -> tuple[str, set[str]]:
        engine = make_engine(fresh_pg_database)
        try:
            async with engine.connect() as conn:
                version = (
                    await conn.execute(text("SELECT version_num FROM alembic_version"))
                ).one()
                names = await conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                )
                return str(version[0]), {str(n) for (n,) in names}
        finally:
            await engine.dispose()

    version, tables = run_sync(read)
    assert version == _head()
    assert set(Base.metadata.tables) <= tables
