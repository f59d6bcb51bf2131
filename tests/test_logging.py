"""Logging: the library only names loggers; the CLI sets levels (-v/-q anywhere) on stderr."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from tests.conftest import REPO, TINY_REVERSE, run_cli

TINY_TRAIN = ["train", REPO / "recipes" / "reverse.toml", *TINY_REVERSE, "train.max_steps=2"]


def test_importing_seqlab_configures_no_handlers():
    code = (
        "import logging, seqlab, seqlab.run, seqlab.cli, seqlab.data.dataset\n"
        "assert logging.getLogger('seqlab').handlers == [], logging.getLogger('seqlab').handlers\n"
        "assert logging.getLogger().handlers == []\n"
        "assert logging.getLogger('datasets').level in (logging.NOTSET, logging.WARNING)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_train_prints_no_info_lines(where, tmp_path, capsys, monkeypatch):
    args = [*TINY_TRAIN, "--run-dir", tmp_path / "run"]
    args = ["-q", *args] if where == "before" else [*args, "-q"]
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code == 0 and '"best"' in out  # the summary, on stdout
    assert "step 2" not in err and "SRC" not in err and "train:" not in err, err
    assert logging.getLogger("seqlab").level == logging.WARNING


def test_default_shows_info_and_verbose_shows_debug(tmp_path, capsys, monkeypatch):
    code, _, err = run_cli([*TINY_TRAIN, "--run-dir", tmp_path / "a"], capsys, monkeypatch)
    assert code == 0 and "step 2: loss" in err and "SRC" in err, err
    code, _, err = run_cli(["-v", "corpora", "list", "--names"], capsys, monkeypatch)
    assert code == 0 and logging.getLogger("seqlab").isEnabledFor(logging.DEBUG)
    logging.getLogger("seqlab.test").debug("a debug message")
    assert "seqlab.test DEBUG: a debug message" in capsys.readouterr().err
    run_cli(["corpora", "list", "--names"], capsys, monkeypatch)  # back to INFO, one handler
    assert not logging.getLogger("seqlab").isEnabledFor(logging.DEBUG)
    assert len(logging.getLogger("seqlab").handlers) == 1


def test_warnings_are_prefixed_and_datasets_is_quieted(capsys, monkeypatch):
    run_cli(["corpora", "list", "--names"], capsys, monkeypatch)
    logging.getLogger("seqlab.test").warning("careful")
    assert capsys.readouterr().err == "warning: careful\n"
    assert logging.getLogger("datasets").level == logging.ERROR


def test_version_prints_the_installed_version(capsys, monkeypatch):
    import seqlab

    with pytest.raises(SystemExit) as exit_:
        run_cli(["--version"], capsys, monkeypatch)
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"seqlab {seqlab.__version__}\n"
