"""The README stays true: its settings table is the one generated from the code."""

from __future__ import annotations

from config.docs import readme_with_table
from config.settings import PROJECT_DIR, Settings


def test_readme_settings_table_matches_the_settings_object() -> None:
    readme = (PROJECT_DIR / "README.md").read_text()
    assert readme_with_table(readme) == readme, "run `geostream settings --update-readme`"
    for name in Settings.model_fields:
        assert f"`GEOSTREAM_{name.upper()}`" in readme


def test_readme_opens_with_the_two_commands_and_the_makefile_has_them() -> None:
    readme = (PROJECT_DIR / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert "make run" in first_block
    assert "make test" in first_block
    makefile = (PROJECT_DIR / "Makefile").read_text()
    assert "\nrun:" in makefile
    assert "\ntest:" in makefile
    assert "make test" in (PROJECT_DIR / ".ci" / "run").read_text()
