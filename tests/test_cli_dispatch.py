"""The `hedged` command: subcommand dispatch, --version, help, python -m hedged."""

import subprocess
import sys

import pytest

import hedged
from hedged.cli import SUBCOMMANDS, main


def test_version_matches_package(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"hedged {hedged.__version__}"
    assert hedged.__version__ == "0.2.0"


def test_help_lists_every_subcommand_with_examples(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert f"  {name}" in out
    assert "examples:" in out


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "usage: hedged" in capsys.readouterr().err


def test_unknown_command_is_one_line(capsys):
    assert main(["predcit", "x.jpg"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command 'predcit'" in err


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_has_help_named_after_the_command(name, capsys):
    assert main([name, "--help"]) == 0
    assert f"usage: hedged {name}" in capsys.readouterr().out


def test_dispatch_passes_the_arguments_and_exit_status(capsys):
    # a usage error inside the subcommand comes back as its exit status
    assert main(["predict", "x.jpg", "--accuracy", "2"]) == 2
    assert "--accuracy" in capsys.readouterr().err


def test_python_dash_m_hedged_runs_the_dispatcher():
    done = subprocess.run([sys.executable, "-m", "hedged", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"hedged {hedged.__version__}"


def test_python_dash_m_subcommand_module_runs_its_main():
    # `python -m hedged.cli.predict --help` used to print nothing and exit 0
    done = subprocess.run([sys.executable, "-m", "hedged.cli.predict", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "usage: hedged predict" in done.stdout


def test_help_does_not_import_numpy_or_torch():
    code = (
        "import sys; from hedged.cli import main; main(['--help']); "
        "print(sorted(m for m in ('numpy', 'torch', 'scipy') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
