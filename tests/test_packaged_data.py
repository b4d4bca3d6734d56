"""The studies and cluster profiles shipped inside the package: found by name from any folder,
after the user's own files, and present once (a clone's studies/ and slurm/ link to them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from d2bench.core.package_data import SLURM_PROFILES, STUDIES, packaged_folder
from d2bench.launch.profiles import PROFILE_DIR_ENV, ProfileNotFound, load_profile
from d2bench.study import (
    StudyError,
    expand_cells,
    load_study,
    packaged_study_names,
    resolve_study_file,
)

REPO = Path(__file__).resolve().parents[1]


def test_a_clone_links_to_the_packaged_files_instead_of_copying_them() -> None:
    for folder, packaged in (("studies", STUDIES), ("slurm", SLURM_PROFILES)):
        for link in sorted((REPO / folder).glob("*.yaml")):
            assert link.is_symlink(), f"{link} is a copy; link it to d2bench/{packaged}/"
            assert link.resolve() == (packaged_folder(packaged) / link.name).resolve()


def test_a_packaged_study_runs_by_name_with_the_keys_of_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no studies/ here
    assert packaged_study_names() == ["node-sweep", "node-sweep-ddp", "smoke", "table1", "table2"]
    by_name = load_study("smoke", environ={})
    by_path = load_study(REPO / "studies" / "smoke.yaml", environ={})
    assert by_name.path == packaged_folder(STUDIES) / "smoke.yaml"
    assert [c.key for c in expand_cells(by_name)] == [c.key for c in expand_cells(by_path)]


def test_a_file_in_the_working_directory_wins_over_a_packaged_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smoke").write_text("not a study of ours")
    assert resolve_study_file("smoke") == Path("smoke")
    # a path (folder or suffix) is never taken for a name: the reader reports it missing
    assert resolve_study_file("elsewhere/smoke") == Path("elsewhere/smoke")
    assert resolve_study_file("table1.yaml") == Path("table1.yaml")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("no-such-study", "no study file 'no-such-study' and no packaged study of that name"),
        ("paper-base", "the packaged paper-base.yaml is a base that studies extend"),
    ],
)
def test_an_unknown_name_lists_the_packaged_studies(
    name: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StudyError) as raised:
        load_study(name)
    assert expected in str(raised.value)
    packaged = "packaged studies: node-sweep, node-sweep-ddp, smoke, table1, table2"
    assert packaged in str(raised.value)


def test_profiles_come_from_the_user_folders_first_then_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no slurm/ here
    monkeypatch.delenv(PROFILE_DIR_ENV, raising=False)
    assert load_profile("gpu-cluster").partition == "gpu"
    assert load_profile("test-cluster").partition == "debug"

    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "test-cluster.yaml").write_text(yaml.safe_dump({"partition": "cwd"}))
    assert load_profile("test-cluster").partition == "cwd"
    configured = tmp_path / "profiles"
    configured.mkdir()
    (configured / "test-cluster.yaml").write_text(yaml.safe_dump({"partition": "env"}))
    monkeypatch.setenv(PROFILE_DIR_ENV, str(configured))
    assert load_profile("test-cluster").partition == "env"

    with pytest.raises(ProfileNotFound, match="known profiles: gpu-cluster, test-cluster"):
        load_profile("nowhere")
