"""Read a `single_double_quote` circuit: its layer-0 MLP neurons and its layer-1 head.

    python scripts/read_quote_circuit.py MODEL_DIR CIRCUIT_JSON [--head L.H]

Prints, over the task's 200 test prompts, each kept `blocks.0.mlp.hook_post` neuron's mean
activation at the opening quote and at the last token for double- and single-quoted strings,
how much attention the head sends from the last token to the opening quote (and its sink
mass), and the task accuracy of the full model and of the circuit (paper §3.1, Fig. 1).
"""

import argparse

import torch

from sparse_lens import HookedSparseTransformer
from sparse_lens.circuits.circuit import Circuit
from sparse_lens.tasks.task import get_task, task_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("circuit")
    parser.add_argument("--head", default="1.2", help="LAYER.HEAD of the circuit's head")
    args = parser.parse_args()
    layer, head = (int(x) for x in args.head.split("."))
    model = HookedSparseTransformer.from_pretrained(args.model).eval()
    circuit = Circuit.load(args.circuit, model=model)
    tok = model.tokenizer
    batch = task_batch(get_task("single_double_quote"), tok, model.cfg.n_ctx, "test", 200)
    double = torch.tensor([tok.decode([int(c)]).startswith('"') for c in batch.correct])
    rows, last = torch.arange(len(batch)), batch.last
    opens = torch.tensor(
        [
            next(
                p
                for p, t in enumerate(batch.tokens[i].tolist())
                if set(tok.decode([t])) & set("'\"")
            )
            for i in range(len(batch))
        ]
    )
    with torch.no_grad():
        logits, cache = model.run_with_cache(batch.tokens)
        circuit_logits = model.run_with_hooks(batch.tokens, fwd_hooks=circuit.fwd_hooks(model))
    post = cache["blocks.0.mlp.hook_post"]
    print(
        "neuron: mean at the opening quote (double / single) | at the last token (double / single)"
    )
    for n in circuit.nodes.get("blocks.0.mlp.hook_post", []):
        at_open, at_last = post[rows, opens, n], post[rows, last, n]
        print(
            f"  0.mlp[{n}]: {at_open[double].mean():+.2f} / {at_open[~double].mean():+.2f} | "
            f"{at_last[double].mean():+.2f} / {at_last[~double].mean():+.2f}"
        )
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"][:, head][rows, last]  # [batch key]
    print(
        f"L{layer}H{head}: attention from the last token to the opening quote "
        f"{pattern[rows, opens].mean():.3f}; its largest weight is on that quote in "
        f"{(pattern.argmax(-1) == opens).float().mean():.0%} of prompts"
    )
    if model.cfg.attn_sinks:
        sink = cache[f"blocks.{layer}.attn.hook_sink_prob"][:, head][rows, last]
        print(f"L{layer}H{head}: sink mass at the last token {sink.mean():.3f}")

    def accuracy(lg: torch.Tensor) -> float:
        return float(
            (lg[rows, last, batch.correct] > lg[rows, last, batch.incorrect]).float().mean()
        )

    print(f"accuracy: full model {accuracy(logits):.3f}, circuit {accuracy(circuit_logits):.3f}")


if __name__ == "__main__":
    main()
