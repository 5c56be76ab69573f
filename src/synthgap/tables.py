"""Tables as CSV (for machines) and Markdown (for people), written atomically."""

from __future__ import annotations

from pathlib import Path

from synthgap.paths import atomic_write_csv, atomic_write_text


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def markdown(rows: list[dict], title: str = "") -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = [f"{title}\n"] if title else []
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict], stem: Path, title: str = "", appendix: str = "") -> list[Path]:
    """``stem.csv`` and ``stem.md`` (followed by ``appendix``, e.g. a second table); returns both paths."""
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    atomic_write_csv(csv_path, rows)
    atomic_write_text(md_path, markdown(rows, title) + (f"\n{appendix}" if appendix else ""))
    return [csv_path, md_path]
