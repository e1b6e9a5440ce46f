"""``build_report``: find a run's model, metrics, task table and circuits and write the pages.

``source`` is a demo folder (``run/``, ``circuits/``, ``tasks.json``), a training run folder
(``final/``, ``metrics.jsonl``) or one circuit JSON (its model from ``model_dir`` or the path
recorded at pruning time). Writes ``index.html`` and ``circuits/{task}.html`` + ``.dot``.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyses.circuit_graph import circuit_dot
from analyses.circuit_view import render_circuit_page
from analyses.page_data import TaskTable
from analyses.report import ReportConfig, circuit_page_data, index_page, task_tables_of
from sparse_lens.circuits.circuit import Circuit
from sparse_lens.circuits.circuit_format import read_circuit_dict
from sparse_lens.circuits.explain.sample import PretrainingSample, load_sample
from sparse_lens.files.atomic import atomic_write_text, read_json
from sparse_lens.files.jsonl import read_jsonl
from sparse_lens.model.transformer import HookedSparseTransformer
from sparse_lens.tasks.task import TASK_NAMES, get_task, task_table

log = logging.getLogger(__name__)


@dataclass
class ReportSources:
    """What a report is built from (paths that were found; ``None`` where absent)."""

    model_dir: Path
    circuits: list[Path]
    run_dir: Path | None = None
    task_table: Path | None = None
    notes: list[str] = field(default_factory=list)


def find_sources(source: Path, model_dir: Path | None = None) -> ReportSources:
    """Locate the model, circuits, run folder and task table of ``source`` (see module doc).

    Raises:
        FileNotFoundError: ``source`` does not exist, or no model folder is found in it.
        ValueError: ``source`` is a circuit file that is not JSON or not a circuit's JSON
            object, or records no model folder and ``model_dir`` is None.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    if source.is_file():
        circuit = read_circuit_dict(source)
        if not isinstance(circuit.get("extra") or {}, dict):
            raise ValueError(f"{source}: malformed circuit file: 'extra' is not a JSON object")
        recorded = (circuit.get("extra") or {}).get("model_dir")
        model = model_dir or (Path(recorded) if recorded else None)
        if model is None:
            raise ValueError(f"{source}: no model folder recorded in the circuit; pass --model")
        return ReportSources(model_dir=Path(model), circuits=[source])
    run = next((d for d in (source, source / "run") if (d / "run.json").is_file()), None)
    candidates = [model_dir] if model_dir else []
    candidates += [source / "final", source / "run" / "final", source]
    model = next((Path(d) for d in candidates if (Path(d) / "config.json").is_file()), None)
    if model is None:
        raise FileNotFoundError(
            f"no model in {source} (looked for final/config.json, run/final/config.json); "
            "pass --model"
        )
    circuits = (
        sorted((source / "circuits").glob("*.json")) if (source / "circuits").is_dir() else []
    )
    circuits += [p for p in sorted(source.glob("*.json")) if _is_circuit(p)]
    tasks = source / "tasks.json"
    return ReportSources(
        model_dir=model,
        circuits=circuits,
        run_dir=run,
        task_table=tasks if tasks.is_file() else None,
    )


def check_report_out(src: ReportSources, source: Path, out: Path) -> None:
    """Refuse an ``out`` folder that is one the report reads from: the source folder (or the
    circuit file's folder), its ``circuits/``, the run folder or the model folder (or inside
    it). A subfolder such as ``SOURCE/report`` is fine.

    Raises:
        ValueError: naming both folders.
    """
    out_r = Path(out).expanduser().resolve()
    source = Path(source)
    inputs = [source if source.is_dir() else source.parent, src.model_dir]
    inputs += [source / "circuits"] if source.is_dir() else []
    inputs += [src.run_dir] if src.run_dir else []
    inputs += [p.parent for p in src.circuits]
    for folder in inputs:
        if out_r == Path(folder).resolve():
            raise ValueError(
                f"--out {str(out)!r} is the report's own source folder {str(folder)!r}; "
                f"write the report elsewhere (e.g. {Path(folder) / 'report'})"
            )
    model_r = Path(src.model_dir).resolve()
    if model_r in out_r.parents:
        raise ValueError(
            f"--out {str(out)!r} lies inside the model folder {str(src.model_dir)!r}; write the "
            "report elsewhere"
        )


def read_task_table(path: Path) -> tuple[dict[str, dict[str, Any]], str]:
    """The full model's task table a report shows, and its split, from ``path``: the test
    table of a demo's ``tasks.json`` (``analyses.cli.demo.task_tables_record``: a table per
    split, each with its split and n), or a flat ``{task: row}`` table (a sweep point's, or a
    demo's from before the splits were recorded), which is the test split's.

    Raises:
        FileNotFoundError, ValueError: ``path`` is missing, not JSON, or holds no table.
    """
    first = task_tables_of(read_json(path, "task table"), str(path))[0]
    return {name: dict(row) for name, row in first.rows.items()}, first.split


def _is_circuit(path: Path) -> bool:
    try:
        return "circuit_version" in json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def _task_table(
    model: HookedSparseTransformer, names: list[str], n: int, seed: int, notes: list[str]
) -> dict[str, dict[str, float]]:
    """Test-split table of ``names``; a task this tokenizer cannot express is noted, not fatal."""
    table = {}
    for name in names:
        try:
            table |= task_table(model, [get_task(name)], "test", n, seed)
        except ValueError as e:
            notes.append(f"task {name} left out of the table: {e}")
    return table


def build_report(
    source: Path,
    out: Path,
    *,
    model_dir: Path | None = None,
    corpus: str | None = None,
    cache_dir: Path,
    rcfg: ReportConfig | None = None,
    task_n: int = 100,
    title: str | None = None,
    progress: bool = False,
    device: str = "cpu",
) -> Path:
    """Write the report of ``source`` into ``out``, its model run on ``device``; returns the
    index page's path.

    Raises:
        FileNotFoundError: as ``find_sources``, or a model file is missing.
        ValueError: as ``find_sources``, or the model has no ``tokenizer.json``.
    """
    rcfg = rcfg or ReportConfig()
    src = find_sources(source, model_dir)
    model = HookedSparseTransformer.from_pretrained(src.model_dir, device=device).eval()
    if model.tokenizer is None:
        raise ValueError(f"{src.model_dir} has no tokenizer.json")
    circuits = [Circuit.load(p, model=model) for p in src.circuits]
    run_info = read_json(src.run_dir / "run.json", "run") if src.run_dir else None
    sample = load_sample(  # explain's draw: the run's corpus unless named, validation windows
        model,
        corpus=corpus,
        run_info=run_info,
        cache_dir=cache_dir,
        n_windows=rcfg.n_windows,
        seed=rcfg.seed,
    )
    metrics = None
    if src.run_dir and (src.run_dir / "metrics.jsonl").is_file():
        metrics = read_jsonl(src.run_dir / "metrics.jsonl")
    if src.task_table:
        tables = task_tables_of(read_json(src.task_table, "task table"), str(src.task_table))
    else:  # a lone circuit needs only its own task; a run folder tables every task it can
        names = [c.task for c in circuits] if Path(source).is_file() else list(TASK_NAMES)
        table = _task_table(model, names, task_n, rcfg.seed, src.notes)
        tables = (TaskTable(rows=table, split="test", n=task_n),)
    out.mkdir(parents=True, exist_ok=True)
    links = _circuit_pages(model, circuits, sample, out, rcfg, progress)
    index = index_page(
        title=title or f"sparse_lens report: {src.model_dir}",
        run_info=run_info,
        metrics=metrics,
        task_tables=tables,
        circuits=links,
        notes=src.notes,
        png_dir=out / "figures",
    )
    atomic_write_text(out / "index.html", index)
    return out / "index.html"


def _circuit_pages(
    model: HookedSparseTransformer,
    circuits: list[Circuit],
    sample: PretrainingSample,
    out: Path,
    rcfg: ReportConfig,
    progress: bool,
) -> list[tuple[Circuit, str]]:
    """Write each circuit's page, its numbers (``.report.json``) and its ``.dot`` into
    ``out/circuits``; returns each circuit with its page's path relative to ``out``."""
    links = []
    for circuit in circuits:
        task = get_task(circuit.task)
        dot = f"{circuit.task}.dot"
        atomic_write_text(out / "circuits" / dot, circuit_dot(circuit, model.cfg))
        page = circuit_page_data(
            model,
            circuit,
            task,
            sample.windows,
            rcfg,
            progress=progress,
            windows_source=sample.description,
        )
        html = render_circuit_page(page, dot_name=dot, back_link="../index.html")
        atomic_write_text(out / "circuits" / f"{circuit.task}.html", html)
        atomic_write_text(
            out / "circuits" / f"{circuit.task}.report.json", json.dumps(page.numbers(), indent=2)
        )
        links.append((circuit, f"circuits/{circuit.task}.html"))
        log.info("circuit page: %s", out / "circuits" / f"{circuit.task}.html")
    return links
