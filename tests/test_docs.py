"""The README says what the code does: its lifecycle table is the one in exchange/lifecycle.py."""

from __future__ import annotations

from pathlib import Path

from exchange import lifecycle

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_lifecycle_table_is_the_codes() -> None:
    """A transition added or changed without updating the README fails here."""
    text = README.read_text(encoding="utf-8")
    start = text.index("-->", text.index("<!-- lifecycle-table")) + len("-->")
    end = text.index("<!-- /lifecycle-table -->")
    assert text[start:end].strip() == lifecycle.markdown_table()


def test_every_cli_command_is_in_the_readme() -> None:
    """Each top-level command of ``exchange`` is named in the README's CLI table."""
    from exchange.cli.main import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands is not None
    text = README.read_text(encoding="utf-8")
    missing = [name for name in commands if f"`exchange {name}" not in text]
    assert missing == []
