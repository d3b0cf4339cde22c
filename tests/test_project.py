"""The project's promises about itself: README commands, CI script, entry points."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_test_command():
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- test-command.*?-->\s*```bash\n(.*?)\n```", text, re.S)
    assert match, "README.md has no code block after the test-command marker"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command_in_a_fresh_environment():
    """.ci/run extracts exactly the README's test command (the awk program it uses) and makes a venv."""
    script = (ROOT / ".ci" / "run").read_text()
    awk_program = re.search(r"awk '([^']*)' README.md", script).group(1)
    extracted = subprocess.run(["awk", awk_program, "README.md"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    assert extracted == readme_test_command()
    assert "python3 -m venv" in script and 'eval "$test_command"' in script


def test_readme_commands_install_the_project_and_run_demo_and_tests():
    text = (ROOT / "README.md").read_text()
    assert 'pip install ".[cpu]" && pn2v-demo' in text
    command = readme_test_command()
    assert command.startswith("pip install ") and "pytest" in command and "tests" in command


def test_demo_entry_point_exists():
    setup = (ROOT / "setup.py").read_text()
    module, function = re.search(r"pn2v-demo = ([\w.]+):(\w+)", setup).groups()
    imported = __import__(module, fromlist=[function])
    assert callable(getattr(imported, function))
