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


def test_the_readme_test_command_runs_the_tests_in_two_processes_that_xdist_is_installed_for():
    command = readme_test_command()
    assert re.search(r"pytest .*-n 2\b", command) and "--dist loadfile" in command
    extras = re.search(r'"test": \[([^\]]*)\]', (ROOT / "setup.py").read_text()).group(1)
    assert '"pytest-xdist"' in extras


def test_test_processes_side_by_side_build_a_runtime_once(tmp_path):
    import threading
    import time

    from tensorflow_runtimes import _build_once

    builds = []

    def build(folder):
        builds.append(folder)
        time.sleep(0.3)                 # long enough for the other caller to arrive while it builds
        (folder / "done").write_text("1")

    callers = [threading.Thread(target=_build_once, args=(tmp_path / "runtime", build, "a runtime")) for _ in range(3)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()

    assert len(builds) == 1 and (tmp_path / "runtime" / "done").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []
