"""What every command shares, torch-free: option types that range-check numbers and refuse an
empty ``--out``, the error type reported as ``error: ...``, the output-folder claim and loading a
model folder. The library's enumerations (preset names, splits, ...) come from the torch-free
``sparse_lens.vocab`` (``sparse-lens --help`` imports neither torch nor the library's models:
the functions that need them import them when a command runs)."""

import argparse
import contextlib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for annotations only: importing the model imports torch
    from sparse_lens.model.transformer import HookedSparseTransformer

from sparse_lens.vocab import CHANCE_LOSS

DEFAULT_CACHE = Path("~/.cache/sparse_lens")


class CLIError(Exception):
    """An input problem to report as ``error: ...`` with exit status 2."""


def number(
    kind: type,
    low: int | float | None = None,
    high: int | float | None = None,
    *,
    open_low: bool = False,
) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind`` (int or float), finite, in ``[low, high]`` (``(low,
    high]`` with ``open_low``); out of range, the parser stops with a message naming the range.

    Raises:
        argparse.ArgumentTypeError: (from the returned parser) ``text`` is not a ``kind``, not
            finite, or out of range (the range is named).
    """
    fmt = "d" if kind is int else "g"  # an integer bound in digits, not 9.22337e+18
    lo = "" if low is None else (f"> {low:{fmt}}" if open_low else f">= {low:{fmt}}")
    hi = "" if high is None else f"<= {high:{fmt}}"
    want = " and ".join(x for x in (lo, hi) if x) or "finite"
    noun = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number, {want}")
        if (low is not None and (value < low or (open_low and value == low))) or (
            high is not None and value > high
        ):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range: must be {want}")
        return value

    parse.__name__ = noun  # argparse names the type in "invalid ... value" messages
    return parse


POSITIVE_INT = number(int, 1)
SEED = number(int, 0, 2**63 - 1)
# examples per task: the suite's generators and one forward pass a batch make 10,000 a few
# minutes of work; more is a typo (1e8 ran silently for minutes)
TASK_EXAMPLES = number(int, 1, 10_000)
POSITIVE_FLOAT = number(float, 0, open_low=True)
FRACTION = number(float, 0, 1)


def pair_count(text: str) -> int:
    """An argparse ``type`` for a number of task examples that come as minimal pairs: a positive
    even integer (``--examples 3`` would silently measure 4).

    Raises:
        argparse.ArgumentTypeError: not a positive integer, or odd (named).
    """
    n = POSITIVE_INT(text)
    if n % 2:
        raise argparse.ArgumentTypeError(
            f"{n} is odd: task examples come in minimal pairs (2 each); use "
            + (f"{n - 1} or {n + 1}" if n > 1 else "2")
        )
    return n


def _target_loss(text: str) -> float:
    """An argparse ``type`` for a task target loss in nats: ``0 < t < ln 2``. Every task is a
    choice between two tokens, so ``ln 2`` (0.693) is a coin flip's loss: a target at or above it
    would count a model at chance as solving the task.

    Raises:
        argparse.ArgumentTypeError: not a number, not finite, or out of range (named).
    """
    value = number(float, 0, open_low=True)(text)
    if value >= CHANCE_LOSS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is out of range: must be > 0 and below ln 2 = {CHANCE_LOSS:.3f} nats, "
            "the loss of a coin flip between the two candidate tokens"
        )
    return value


TARGET_LOSS = _target_loss


def device_name(text: str) -> str:
    """An argparse ``type`` for ``--device``: ``cpu``, ``cuda`` or ``cuda:N`` (torch's names
    for the devices this package trains on); whether CUDA is there is checked later
    (``check_device``), after the parser, where torch is imported.

    Raises:
        argparse.ArgumentTypeError: another name (named, with the allowed ones).
    """
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r}: must be cpu, cuda or cuda:N")
    return text


def check_device(device: str) -> None:
    """Refuse a CUDA ``device`` this machine does not have.

    Raises:
        CLIError: CUDA is not available, or ``cuda:N`` names a GPU beyond the count.
    """
    import torch

    if not device.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise CLIError(f"--device {device}: CUDA is not available on this machine; use cpu")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise CLIError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")


def int_range(text: str) -> str:
    """An argparse ``type`` for ``LOW,HIGH``: two integers with ``1 <= LOW <= HIGH``; returns
    ``text`` unchanged (normalised to ``LOW,HIGH``).

    Raises:
        argparse.ArgumentTypeError: not two integers, or out of order (named).
    """
    parts = text.split(",")
    try:
        low, high = (int(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be LOW,HIGH integers, got {text!r}") from None
    if not 1 <= low <= high:
        raise argparse.ArgumentTypeError(f"must be LOW,HIGH with 1 <= LOW <= HIGH, got {text!r}")
    return f"{low},{high}"


def out_path(text: str) -> Path:
    """An argparse ``type`` for ``--out``: refuses the empty string (an unset variable), which
    ``Path`` would read as the current folder.

    Raises:
        argparse.ArgumentTypeError: ``text`` is empty or blank.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty (an unset shell variable?); name a path")
    return Path(text)


def cache_path(path: Path) -> Path:
    """``--cache-dir`` expanded (``~``), after ``check_output_path``: not empty, not a file,
    writable.

    Raises:
        CLIError: it cannot hold a cache (the message names it).
    """
    from sparse_lens.files.outputs import check_output_path

    try:
        return check_output_path(path, "folder", "--cache-dir")
    except ValueError as e:
        raise CLIError(str(e)) from e


def claim(stack: contextlib.ExitStack, path: Path, command: str, **kw: Any) -> Path:
    """``outputs.claim_output`` held until ``stack`` closes; its refusals as ``CLIError``.

    Raises:
        CLIError: ``claim_output`` refuses ``path`` (its message).
    """
    from sparse_lens.files.outputs import claim_output

    try:
        return stack.enter_context(claim_output(path, command, **kw))
    except ValueError as e:
        raise CLIError(str(e)) from e


def check_replaceable_circuit(path: Path) -> None:
    """An existing ``--out`` file is replaced only if it is a circuit file (a JSON object with
    ``circuit_version``), never someone's other file (``notes.txt``, a JSON of their own); for
    ``claim(..., check_existing=check_replaceable_circuit)``.

    Raises:
        ValueError: ``path`` exists and is not a circuit file.
    """
    if not path.exists():
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        is_circuit = isinstance(data, dict) and "circuit_version" in data
    except (ValueError, TypeError, OSError):
        is_circuit = False
    if not is_circuit:
        raise ValueError(f"--out {str(path)!r} exists and is not a circuit file; pick another name")


def load_model(
    path: Path, option: str, *, need_tokenizer: bool = True, device: str = "cpu"
) -> "HookedSparseTransformer":
    """The sparse model in the folder ``path`` (written by ``save_pretrained``), in eval mode, on
    ``device`` (checked first: :func:`check_device`); every command opens a model folder through
    this. ``option`` names the argument in errors (``--model``, ``MODEL_DIR``).

    Raises:
        CLIError: ``path`` is missing or a file, a model file is missing or corrupt, or (with
            ``need_tokenizer``) the folder has no ``tokenizer.json``; the message names the
            option and the path (or the file in it).
    """
    from sparse_lens.model.transformer import HookedSparseTransformer  # torch, once a command runs

    folder = path.expanduser()
    if folder.is_file():
        raise CLIError(
            f"{option} {str(path)!r} is a file; name a model folder (config.json, "
            "model.safetensors, tokenizer.json), e.g. RUN/final"
        )
    try:
        check_device(device)
        model = HookedSparseTransformer.from_pretrained(folder, device=device).eval()
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(f"{option}: {e}") from e  # the library's message names the path
    if need_tokenizer and model.tokenizer is None:
        raise CLIError(f"{option} {str(path)!r} has no tokenizer.json")
    return model


def load_dense_model(path: Path, option: str = "--dense") -> Any:
    """The dense GPT-2 in the folder ``path`` (``train --dense-hf``) as a TL
    ``TransformerBridge`` (``load_dense``).

    Raises:
        CLIError: the folder or one of its files is missing or unusable (the message names the
            option and the path or file).
    """
    from sparse_lens.training.dense_baseline import load_dense  # torch, once a command runs

    try:
        return load_dense(path.expanduser())
    except (FileNotFoundError, ValueError, OSError) as e:
        raise CLIError(f"{option}: {e}") from e  # load_dense's message names the path
