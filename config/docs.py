"""The README's settings table, generated from :class:`config.settings.Settings`."""

from __future__ import annotations

from pathlib import Path

from pydantic.fields import FieldInfo

from config.settings import PROJECT_DIR, Settings

BEGIN = "<!-- settings-table:begin -->"
END = "<!-- settings-table:end -->"


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if isinstance(value, Path):
        try:
            return f"`{value.relative_to(PROJECT_DIR)}`"
        except ValueError:
            return f"`{value}`"
    if value is None or value == "":
        return "(unset)"
    return f"`{value}`"


def settings_table() -> str:
    """A markdown table: variable, default, meaning — one row per setting."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `GEOSTREAM_{name.upper()}` | {_default(field)} | {description} |")
    return "\n".join([BEGIN, *rows, END])


def readme_with_table(readme: str) -> str:
    """The README text with its settings table replaced by the generated one."""
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    return readme[:start] + settings_table() + readme[end:]
