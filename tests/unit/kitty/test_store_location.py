"""Store locations: the SQLite spellings shared by checkpoints and memory, Postgres passwords."""

from __future__ import annotations

from pathlib import Path

import pytest

from kitty.errors import UserError
from kitty.store_location import hide_password, is_postgres, sqlite_file


class _StoreError(UserError):
    pass


def _file(location: str) -> Path:
    return sqlite_file(
        location, store="test store", fix="set it to", default_name="t.sqlite", error=_StoreError
    )


@pytest.mark.parametrize("spell", ["sqlite:{path}", "sqlite:///{path}", "{path}"])
def test_three_spellings_name_one_file_and_create_its_folder(tmp_path: Path, spell: str) -> None:
    path = tmp_path / "deep" / "t.sqlite"
    assert _file(spell.format(path=path)) == path
    assert path.parent.is_dir()


def test_variables_and_home_are_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORE_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _file("$STORE_DIR/a.sqlite") == tmp_path / "a.sqlite"
    assert _file("~/b.sqlite") == tmp_path / "home" / "b.sqlite"


def test_a_directory_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(_StoreError) as refused:
        _file(str(tmp_path))
    assert str(refused.value) == (
        f"test store {tmp_path} is a directory; set it to a file such as {tmp_path / 't.sqlite'}"
    )


def test_postgres_urls_lose_their_password() -> None:
    url = "postgresql://kitty:s3cret@db:5432/kitty"
    assert is_postgres(url) and not is_postgres("sqlite:x.sqlite")
    assert hide_password(url) == "postgresql://***@db:5432/kitty"
    assert hide_password("/data/x.sqlite") == "/data/x.sqlite"
