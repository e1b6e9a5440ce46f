"""A worker for the shared-study test: ``python -m tests.study_worker FOLDER RANK ROUNDS``.

It imports the library, writes ``FOLDER/ready.RANK``, waits for ``FOLDER/go`` (a start time),
then in round ``i`` (at start + ``i * PERIOD`` seconds, so every worker starts each round at
the same instant) opens the study of the new SQLite file ``FOLDER/round{i}.db`` through
``hparam_search.open_study`` and runs one trial of a trivial objective. Each round's outcome
(``ok`` or the error) is one line of JSON on stdout."""

import json
import sys
import time
from pathlib import Path

from sparse_lens.circuits.hparam_search import SearchConfig, open_study

PERIOD = 0.6


def main(folder: Path, rank: int, rounds: int) -> None:
    (folder / f"ready.{rank}").touch()
    while not (folder / "go").exists():
        time.sleep(0.01)
    time.sleep(0.05)  # the go file is written atomically, but give its writer a moment
    start = float((folder / "go").read_text())
    for i in range(rounds):
        time.sleep(max(0.0, start + i * PERIOD - time.time()))
        scfg = SearchConfig(storage=f"sqlite:///{folder / f'round{i}.db'}", trials=1)
        try:
            study = open_study(scfg, study_name="shared")
            study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=1)
            outcome = "ok"
        except Exception as e:  # the test reports every failure, whatever its kind
            outcome = f"{type(e).__name__}: {e}"[:300]
        sys.stdout.write(json.dumps({"round": i, "outcome": outcome}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
