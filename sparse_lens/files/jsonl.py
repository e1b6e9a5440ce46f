"""Reading a JSON-lines file written one record per line, each flushed as written
(``metrics.jsonl``, ``bridge_metrics.jsonl``).

A process killed while writing leaves at most its last line cut. Every reader treats that line
alike: ``read_jsonl`` drops it with a logged warning. A bad line anywhere else is corruption,
not a kill, and raises, naming the file and the line.
"""

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of ``path``: one JSON object per line, blank lines skipped. A last line that
    is not a JSON object (cut by a kill while it was written) is dropped with a warning.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not UTF-8 text, or a line before the last is not a JSON object
            (``"{path}:{line} is corrupt (why)"``).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e})") from e
    lines = [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    records = []
    for n, (i, line) in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            if n == len(lines):
                logger.warning("%s:%d: dropping a cut last line (%s)", path, i, e)
                break
            raise ValueError(f"{path}:{i} is corrupt ({e})") from e
        records.append(record)
    return records
