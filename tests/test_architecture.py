"""The shape of the codebase: layer contracts, module size, light imports, and docs that match the code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "extmem"
HEAVY = ("xgboost", "pyarrow", "sklearn", "scipy", "numpy", "pandas")
MAX_MODULE_LINES = 400


def _modules() -> set[str]:
    return {path.relative_to(ROOT).as_posix() for path in PACKAGE.rglob("*.py") if path.name != "__init__.py" or path.parent == PACKAGE} - {
        "extmem/__main__.py"
    }


def _lint_imports(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """import-linter on the contracts of the pyproject.toml in ``cwd``, in a clean process."""
    script = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, check=False)


def test_layer_contracts_hold(tmp_path):
    # import-linter checks the contracts declared in pyproject.toml; run it in a clean process.
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_layer_contracts_catch_a_reversed_import(tmp_path):
    # The same check fails on a copy of the package where a low step imports a high one.
    copy = tmp_path / "extmem"
    subprocess.run(["cp", "-r", str(PACKAGE), str(copy)], check=True)
    (copy / "read" / "_reversed.py").write_text("from extmem.run import _skeleton\n")
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    result = _lint_imports(tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode != 0
    assert "extmem.read._reversed -> extmem.run._skeleton" in result.stdout


def test_docs_layers_match_the_contract():
    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text[text.index("## Layers") : text.index("## Code map")]
    documented = [sorted(re.findall(r"`(extmem\.\w+)`", row.split("|")[1])) for row in table.splitlines() if row.startswith("| `extmem")]
    assert documented == [sorted(part.strip() for part in layer.split("|")) for layer in layers]


def test_code_map_lists_every_module_and_nothing_else():
    text = (ROOT / "docs" / "architecture.md").read_text()
    code_map = text[text.index("## Code map") : text.index("## Following")]
    listed = set(re.findall(r"^\| `(extmem/[\w/]+\.py)` \|", code_map, flags=re.MULTILINE))
    assert listed == _modules()


def test_modules_stay_small():
    long = {path: count for path in _modules() if (count := len((ROOT / path).read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


_HELP = "import sys; from extmem.cli._main import main; sys.argv = ['extmem', {}]\ntry:\n    main()\nexcept SystemExit:\n    pass"


@pytest.mark.parametrize(
    ("code", "forbidden"),
    [
        ("import extmem; extmem.SPLICE_SITES; extmem.OptionError", HEAVY),
        ("import extmem; extmem.Dataset('x', label='y')", ("xgboost", "sklearn", "scipy")),
        (_HELP.format("'--help'"), HEAVY),
        (_HELP.format("'train', '--help'"), HEAVY),
    ],
    ids=["import", "dataset", "help", "train-help"],
)
def test_light_paths_import_nothing_heavy(code, forbidden):
    probe = code + "\nimport sys\nprint(sorted({name.split('.')[0] for name in sys.modules} & set(" + repr(forbidden) + ")))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_cli_reference_matches_the_parser():
    from extmem.cli._reference import render_reference

    assert (ROOT / "docs" / "cli.md").read_text() == render_reference(), "regenerate: python -m extmem.cli._reference > docs/cli.md"


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def test_readme_is_short_with_two_setup_commands_that_ci_runs():
    readme = _readme()
    assert len(readme.encode()) <= 10_000
    setup = readme[readme.index("## Set up") : readme.index("\n## ", readme.index("## Set up") + 1)]
    commands = re.findall(r"```\n(.*?)\n```", setup, flags=re.DOTALL)
    assert len(commands) == 2
    assert all(command.startswith("python3 -m venv .venv && .venv/bin/pip install ") for command in commands)
    assert commands[0].endswith("extmem demo")
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_doc_links_resolve():
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
