"""Kill -9 a real training process at named points (``SPARSE_LENS_FAULT``, ``io.fault_point``):
every folder left is complete or absent, and resuming gives bit-identical weights."""

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sparse_lens.model.transformer import HookedSparseTransformer

ROOT = Path(__file__).resolve().parents[2]
STEPS = "12"  # tiny preset: checkpoints at steps 10 and 12, then final/


def _train(out: Path, cache: Path, *extra: str, fault: str | None = None) -> int:
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("SPARSE_LENS_FAULT", None)
    if fault is not None:
        env["SPARSE_LENS_FAULT"] = fault
    argv = ["train", "--preset", "tiny", "--steps", STEPS, "--out", str(out)]
    argv += ["--corpus", str(cache.parent / "corpus"), "--cache-dir", str(cache), "--quiet"]
    argv += extra
    proc = subprocess.run(
        [sys.executable, "-m", "analyses.cli", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr[-2000:]
    return proc.returncode


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run on 40 files of the standard library (its tokenizer trains in
    seconds), and the token cache every other run shares."""
    root = tmp_path_factory.mktemp("kill")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    (root / "corpus").mkdir()
    for src in sorted(stdlib.glob("*.py"))[:40]:
        shutil.copy(src, root / "corpus" / src.name)
    assert _train(root / "ref", root / "cache") == 0
    return root


def _check_complete_or_absent(run: Path) -> None:
    """Every checkpoint folder and ``final/`` that exists loads whole (tokenizer included)."""
    for ckpt in sorted((run / "checkpoints").glob("step-*")):
        model = HookedSparseTransformer.from_pretrained(ckpt)
        assert model.tokenizer is not None, ckpt
        state = torch.load(ckpt / "trainer.pt", weights_only=True)
        assert state["step"] == int(ckpt.name.removeprefix("step-"))
    if (run / "checkpoints" / "latest.json").exists():
        info = json.loads((run / "checkpoints" / "latest.json").read_text())
        assert (run / "checkpoints" / info["dir"]).is_dir()
    if (run / "final").exists():
        assert HookedSparseTransformer.from_pretrained(run / "final").tokenizer is not None
    if (run / "run.json").exists():
        json.loads((run / "run.json").read_text())


def _slug(fault: str) -> str:
    return fault.replace(":", "_").replace("/", "_")


def _kill_and_resume(reference: Path, name: str, fault: str) -> None:
    run, cache = reference / name, reference / "cache"
    assert _train(run, cache, fault=fault) == -signal.SIGKILL, f"{fault} was never reached"
    _check_complete_or_absent(run)
    assert _train(run, cache, "--resume") == 0
    _check_complete_or_absent(run)
    want = load_file(str(reference / "ref" / "final" / "model.safetensors"))
    got = load_file(str(run / "final" / "model.safetensors"))
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want), fault
    assert not [p for p in run.rglob("*.tmp")], "temporaries left after the resumed run"


@pytest.mark.parametrize("fault", ["dir:step-0000012/tokenizer.json"])
def test_killed_run_is_complete_or_absent_and_resumes_exactly(reference, fault):
    _kill_and_resume(reference, _slug(fault), fault)


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault",
    [
        "write:run/run.json",
        "step:3",
        "step:11",
        "dir:step-0000010/model.safetensors",
        "dir:step-0000010/tokenizer.json",
        "dir:step-0000010/config.json",
        "dir:step-0000010/trainer.pt",
        "dir:step-0000010",
        "write:checkpoints/latest.json",
        "dir:step-0000012/model.safetensors",
        "dir:final/model.safetensors",
        "dir:final/tokenizer.json",
        "dir:final/config.json",
        "dir:final",
    ],
)
def test_killed_everywhere(reference, fault):
    # write:DIR/FILE names the folder written into: "run" for run.json
    name = "run" if fault.startswith("write:run/") else _slug(fault)
    _kill_and_resume(reference, name, fault)


def test_a_result_file_killed_while_written_keeps_its_old_content(tmp_path):
    """``tasks.json``, ``summary.json``, circuits ... go through ``atomic_write``: a kill
    between writing and renaming leaves the previous file whole (and a temporary)."""
    target = tmp_path / "demo" / "tasks.json"
    target.parent.mkdir()
    target.write_text('{"old": true}\n')
    code = (
        "from pathlib import Path\n"
        "from sparse_lens.files.atomic import atomic_write_json\n"
        f"atomic_write_json(Path({str(target)!r}), {{'new': list(range(100000))}})\n"
    )
    env = os.environ | {"PYTHONPATH": str(ROOT), "SPARSE_LENS_FAULT": "write:demo/tasks.json"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(target.read_text()) == {"old": True}


@pytest.mark.slow
def test_two_trainings_started_together_on_one_folder(reference):
    """Exactly one of two runs on one folder writes it; the other fails (busy, or the folder
    already holds a run) and the folder is one run's, whole."""
    run, cache = reference / "race", reference / "cache"
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("SPARSE_LENS_FAULT", None)
    argv = [
        sys.executable,
        "-m",
        "analyses.cli",
        "train",
        "--preset",
        "tiny",
        "--steps",
        STEPS,
    ]
    argv += ["--out", str(run), "--corpus", str(reference / "corpus")]
    argv += ["--cache-dir", str(cache), "--quiet"]
    procs = [
        subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stderr.close()
    assert sorted(code for code, _ in results) == [0, 2], results
    (err,) = [e for code, e in results if code == 2]
    assert "another process" in err or "already holds a run" in err
    _check_complete_or_absent(run)
    want = load_file(str(reference / "ref" / "final" / "model.safetensors"))
    got = load_file(str(run / "final" / "model.safetensors"))
    assert all(torch.equal(want[k], got[k]) for k in want)
