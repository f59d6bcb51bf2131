"""The README stays true: its Python blocks run, its commands parse, its `make` targets exist."""

from __future__ import annotations

import re
import shlex
import shutil

import pytest

from tests.conftest import REPO

README = REPO / "README.md"
MAX_LINES = 250


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def readme() -> str:
    return README.read_text(encoding="utf-8")


def command_lines(text: str) -> list[list[str]]:
    """Each line of the README's `sh` blocks as words (a line ending in a backslash continues on
    the next), stopping at a comment or a redirection."""
    lines = []
    for block in fenced_blocks(text, "sh"):
        for line in block.replace("\\\n", " ").splitlines():
            words = []
            for word in shlex.split(line, comments=True):
                if word[0] in "<>|":
                    break
                words.append(word)
            if words:
                lines.append(words)
    return lines


def seqlab_commands(text: str) -> list[list[str]]:
    """The arguments of every `seqlab ...` and `torchrun ... -m seqlab ...` line."""
    found = []
    for words in command_lines(text):
        if words[0] == "seqlab":
            found.append(words[1:])
        elif words[0] == "torchrun" and "seqlab" in words:
            found.append(words[words.index("seqlab") + 1 :])
    return found


def test_readme_python_blocks_run(reverse_run_dir, tmp_path, monkeypatch):
    blocks = fenced_blocks(readme(), "python")
    assert len(blocks) >= 4
    shutil.copytree(reverse_run_dir, tmp_path / "runs" / "reverse")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"README.md python block {number}", "exec"), namespace)


def test_readme_seqlab_commands_parse():
    """Every command line the README shows is accepted by the real CLI parser (nothing runs)."""
    from seqlab.cli import build_parser

    commands, failed = seqlab_commands(readme()), []
    assert len(commands) >= 10
    for args in commands:
        try:
            build_parser().parse_args(args)
        except SystemExit as exit:
            if exit.code != 0:  # `--version` and `--help` exit 0
                failed.append(f"seqlab {shlex.join(args)}")
    assert not failed, "README commands the CLI rejects:\n" + "\n".join(failed)


def test_command_lines_cut_at_comments_and_redirections():
    text = "```sh\nseqlab translate CKPT < in.txt > out.txt  # one line\nmake test\n```\n"
    assert command_lines(text) == [["seqlab", "translate", "CKPT"], ["make", "test"]]
    assert seqlab_commands("```sh\ntorchrun --x=2 -m seqlab train R.toml\n```\n") == [
        ["train", "R.toml"]
    ]


def test_make_targets_named_in_the_docs_exist():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.M))
    missing = []
    for page in [README, *sorted((REPO / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        used = {w[1] for w in command_lines(text) if w[0] == "make" and len(w) > 1}
        used |= set(re.findall(r"`make ([a-z][\w-]*)", text))
        missing += [f"{page.name}: make {t}" for t in sorted(used - targets)]
    assert "install" in targets and "test" in targets
    assert not missing, f"make targets the Makefile lacks: {missing}"


def test_readme_is_short_and_about_using_seqlab():
    lines = readme().splitlines()
    assert len(lines) <= MAX_LINES, (
        f"README.md has {len(lines)} lines; keep it at most {MAX_LINES} and move detail to docs/"
    )
    for phrase in ("DESIGN", "been lent", "session"):
        assert phrase not in readme(), f"README.md speaks of {phrase!r}"


@pytest.mark.parametrize("section", ["Install", "Quick start", "Train a recipe", "Deploy"])
def test_readme_has_section(section):
    assert re.search(rf"^## {section}$", readme(), flags=re.M), f"README lacks '## {section}'"
