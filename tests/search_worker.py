"""A search process for the multi-process and kill/resume tests: the planted model's Optuna
search on a given storage. ``python -m tests.search_worker STORAGE TRIALS [--slow]``; prints
the best trial's number, value and parameters as JSON when it ends."""

import json
import sys

from sparse_lens.circuits.ablation import make_ablation
from sparse_lens.circuits.hparam_search import SearchConfig, run_search
from sparse_lens.circuits.masks import PruneConfig, Pruner
from tests.circuits.test_masks import planted_batch, planted_model, pretrain_windows


def planted_pruner() -> Pruner:
    model = planted_model()
    ablation = make_ablation("mean", model, pretrain_windows())
    pcfg = PruneConfig(batch_pairs=16, calibrate=False)
    return Pruner(model, planted_batch(64, 1), planted_batch(32, 2), ablation, pcfg)


def search_config(storage: str, trials: int) -> SearchConfig:
    return SearchConfig(
        trials=trials,
        budget_minutes=10.0,
        epochs=(8, 24),
        n_startup_trials=3,
        storage=storage,
        study_name="planted",
        heartbeat_s=1,
        grace_s=2,
    )


def main(argv: list[str]) -> None:
    storage, trials = argv[0], int(argv[1])
    pruner = planted_pruner()
    study = run_search(pruner, search_config(storage, trials), study_name="planted")
    best = study.best_trial
    sys.stdout.write(
        json.dumps({"number": best.number, "value": best.value, "params": best.params})
    )


if __name__ == "__main__":
    main(sys.argv[1:])
