"""A version per release, written into each run directory; a run directory from a newer release is refused."""
import tomllib
from pathlib import Path

import pytest

import cellsearch
from cellsearch.search.settings import VERSION_FILE, ResumeError, check_settings, check_version, record_version

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_is_pyprojects_and_the_changelog_has_it():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert cellsearch.__version__ == version  # stale metadata: reinstall (pip install -e .)
    assert f"## {version} " in (ROOT / "CHANGELOG.md").read_text()


def test_a_run_directory_records_the_newest_version_that_wrote_it(tmp_path):
    check_settings(tmp_path, {"seed": 0})
    assert (tmp_path / VERSION_FILE).read_text() == f"{cellsearch.__version__}\n"
    check_settings(tmp_path, {"seed": 0})  # resumed by the same release
    record_version(tmp_path, "10.0.0")  # resumed by a newer one
    assert (tmp_path / VERSION_FILE).read_text() == "10.0.0\n"


def test_a_run_directory_from_a_newer_release_is_refused_in_one_line(tmp_path):
    (tmp_path / VERSION_FILE).write_text("0.3.1\n")
    with pytest.raises(ResumeError, match=r"written by cellsearch 0\.3\.1, newer than this cellsearch 0\.2\.0: "
                                          r"upgrade cellsearch") as err:
        check_version(tmp_path, "0.2.0")
    assert "\n" not in str(err.value)
    check_version(tmp_path, "0.10.0")  # numbers, not strings: 0.10 is newer than 0.3
    record_version(tmp_path, "0.10.0")
    assert (tmp_path / VERSION_FILE).read_text() == "0.10.0\n"


def test_a_refused_resume_does_not_claim_the_run_directory(tmp_path):
    check_settings(tmp_path, {"seed": 0})
    (tmp_path / VERSION_FILE).unlink()  # as a run directory from before 0.2.0
    with pytest.raises(ResumeError, match="seed: 0 -> 1"):
        check_settings(tmp_path, {"seed": 1})
    assert not (tmp_path / VERSION_FILE).exists()
