"""``scripts/gpu_check.sh`` end to end on the CPU (tiny preset): the GPU check's own steps and
files, so the script a GPU machine runs is known to work up to the device."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (ROOT / ".venv/bin/activate").exists(), reason="needs scripts/setup.sh")
def test_gpu_check_script_runs_every_step_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "check"
    env = os.environ | {"DEVICE": "cpu", "PRESET": "tiny", "STEPS": "20", "CHECKS": "0"}
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [line.split()[0] for line in (out / "timings.txt").read_text().splitlines()]
    assert steps == ["train", "tasks", "prune", "report"]
    assert len(list((out / "circuits").glob("*.json"))) == 1
    assert (out / "report" / "index.html").is_file()
    assert "check passed on cpu" in done.stdout


def test_gpu_check_script_refuses_a_missing_cuda(tmp_path: Path) -> None:
    """On a machine without CUDA the script stops at once, saying so, and writes nothing."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "check"
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh", str(out)],
        cwd=ROOT, env=os.environ | {"DEVICE": "cuda"}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "no CUDA device" in done.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEVICE": "gpu"}, "DEVICE=gpu: must be cpu, cuda or cuda:N"),
        ({"DEVICE": "cpu", "PRESET": "nosuch"}, "PRESET=nosuch"),
        ({"DEVICE": "cpu", "STEPS": "0"}, "STEPS=0"),
        ({"DEVICE": "cpu"}, "is not an earlier check's folder"),
    ],
)
def test_gpu_check_script_checks_its_settings_before_removing_anything(tmp_path, env, message):
    """A bad setting, or an OUT folder that is not an earlier check's, is refused before the
    script removes, installs or writes anything: the user's file survives."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("data")
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh", str(out)],
        cwd=ROOT, env=os.environ | env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and message in done.stderr
    assert (out / "keep.txt").read_text() == "data"
