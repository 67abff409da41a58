"""Text the docs promise, read from the docs themselves: the auditor's SQL cookbook."""

from __future__ import annotations

import re

from support import REPO

DOCS = REPO / "docs"


def cookbook(database: str = "whystream") -> dict[str, str]:
    """Each ```sql block of docs/cookbook.md by its first line's `-- title`, on `database`."""
    text = (DOCS / "cookbook.md").read_text()
    blocks = re.findall(r"```sql\n-- ([^\n]+)\n(.*?)```", text, re.S)
    return {title: f"-- {title}\n{sql}".replace("whystream.", f"{database}.") for title, sql in blocks}
