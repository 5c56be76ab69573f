"""README truth: every generated result block equals what the committed reports/ files say."""

import subprocess
import sys

from tests.conftest import REPO


def test_readme_results_match_reports():
    proc = subprocess.run([sys.executable, "scripts/readme_results.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_check_fails_when_a_number_is_edited(tmp_path):
    import shutil

    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- generated: headline -->")
    row = readme.index("| `", start)
    bar = readme.index("|", readme.index("|", row + 1) + 1)  # the first number of the first row
    shutil.copytree(REPO / "reports", tmp_path / "reports")
    shutil.copytree(REPO / "benchmarks" / "results", tmp_path / "benchmarks" / "results")
    (tmp_path / "README.md").write_text(readme[: bar - 1] + "9" + readme[bar - 1 :])
    proc = subprocess.run([sys.executable, str(REPO / "scripts/readme_results.py"), "--check", "--root", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "differs" in proc.stderr
