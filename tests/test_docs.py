"""docs/: the recipe-key page matches the code, and every relative link resolves."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path
from typing import Literal

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def generator():
    spec = importlib.util.spec_from_file_location("gen_recipes", REPO / "docs" / "gen_recipes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipes_page_is_current():
    gen = generator()
    committed = (REPO / "docs" / "recipes.md").read_text(encoding="utf-8")
    fresh = gen.render()
    if fresh != committed:
        new = set(fresh.splitlines()) - set(committed.splitlines())
        sample = "\n".join(sorted(new)[:5])
        raise AssertionError(f"docs/recipes.md is out of date; run `{gen.COMMAND}`. New:\n{sample}")


def test_every_recipe_key_is_described():
    """A key added without a comment in its dataclass shows up here by name."""
    rows = [r for r in generator().render().splitlines() if r.startswith("| `")]
    bare = [r.split("|")[1].strip() for r in rows if r.rstrip().endswith("|  |")]
    assert len(rows) > 80
    assert not bare, f"recipe keys without a `# ...` comment in their dataclass: {bare}"


@dataclasses.dataclass(frozen=True)
class Example:
    """An example section.

    Attributes:
        width, depth: the model's size
            in two dimensions.
        kind: which one.
    """

    width: int = 4
    depth: int = 2
    # read by the loader;
    # two lines of it
    path: str | None = None  # and a trailing note
    kind: Literal["a", "b"] = "a"
    pair: tuple[float, float] = (0.9, 0.98)  # a pair
    flag: bool = False


def test_notes_come_from_comments_and_the_docstring():
    gen = generator()
    notes = gen.field_notes(Example)
    assert notes["width"] == notes["depth"] == "the model's size in two dimensions."
    assert notes["path"] == "read by the loader; two lines of it and a trailing note"
    assert notes["kind"] == "which one."
    assert notes["flag"] == ""
    assert gen.class_intro(Example) == "An example section."
    table = "\n".join(gen.key_table(Example))
    assert '| `kind` | `"a" \\| "b"` | `"a"` | which one. |' in table
    assert "| `path` | `string` | `unset` |" in table
    assert "| `pair` | `[float, float]` | `[0.9, 0.98]` | a pair |" in table
    assert "| `flag` | `bool` | `false` |  |" in table


def relative_links(page: Path) -> list[str]:
    """Link targets of a Markdown page outside code blocks, except URLs and in-page anchors."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^([a-z]+:|#)", t)]


def test_relative_links_resolve():
    broken = []
    for page in PAGES:
        for target in relative_links(page):
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    broken = sorted(set(broken))
    assert not broken, "links to missing files:\n" + "\n".join(broken)


def test_link_finder_sees_links_and_skips_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "[a](docs/a.md) [b](b.md#part) [web](https://x.org) [top](#top) ![img](i.png)\n"
        "```sh\n[c](c.md)\n```\n",
        encoding="utf-8",
    )
    assert relative_links(page) == ["docs/a.md", "b.md#part", "i.png"]
