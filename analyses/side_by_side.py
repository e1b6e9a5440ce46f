"""The same analysis on the sparse model and the dense model, over the same task pairs.

* ``patching_pair``: TL activation patching (``transformer_lens.patching``) of the residual
  stream (``[layer, pos]``) and of head outputs (``[layer, head]``): the corrupted run is a
  pair's other context, the metric the clean-normalised logit difference (1 = clean, 0 =
  corrupted).
* ``sink_profile``: per head, the attention mass going to "nothing" on the corpus and on the
  task, and the task-loss change when that sink is removed. The sparse model's sink is its
  learned sink logit; a dense GPT-2 has none and parks attention on the first token, which is
  treated as its sink (removing it = masking the first key's score, in log space). A head whose
  sink mass at the answer position tracks the answer (``|corr(sink, label)|``) uses its sink as a
  threshold, as the paper's bracket-counting head does.
"""

from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import patching

from analyses.steering import paired_batches
from hooks import record
from sparse_lens.tasks.task import TaskBatch, binary_logits, task_loss


def _logit_diff(logits: Tensor, batch: TaskBatch) -> Tensor:
    two = binary_logits(logits, batch)
    return (two[:, 0] - two[:, 1]).mean()


@torch.no_grad()
def patching_pair(model: Any, batch: TaskBatch) -> dict[str, Any]:
    """Residual and head-output patching of ``model`` on the task's equal-length pairs."""
    clean, corrupt = paired_batches(batch)
    clean_tokens, corrupt_tokens = clean.tokens, corrupt.tokens
    clean_logits, clean_cache = model.run_with_cache(clean_tokens)
    corrupt_logits = model(corrupt_tokens)
    clean_ld = float(_logit_diff(clean_logits, clean))
    corrupt_ld = float(_logit_diff(corrupt_logits, clean))
    span = clean_ld - corrupt_ld if abs(clean_ld - corrupt_ld) > 1e-6 else 1.0

    def metric(logits: Tensor) -> Tensor:
        return (_logit_diff(logits, clean) - corrupt_ld) / span

    resid = patching.get_act_patch_resid_pre(model, corrupt_tokens, clean_cache, metric)
    heads = patching.get_act_patch_attn_head_out_all_pos(model, corrupt_tokens, clean_cache, metric)
    return {
        "resid_pre": resid.cpu(),
        "head_out": heads.cpu(),
        "clean_logit_diff": clean_ld,
        "corrupt_logit_diff": corrupt_ld,
        "n_pairs": len(clean),
        "tokens": clean_tokens[0].tolist(),
    }


def _sink_probs(model: Any, tokens: Tensor, learned: bool) -> list[Tensor]:
    """Per layer ``[batch head pos]`` sink probability."""
    n = model.cfg.n_layers
    name = "hook_sink_prob" if learned else "hook_pattern"
    _, cache = model.run_with_cache(tokens, names_filter=lambda s: s.endswith(f"attn.{name}"))
    out = []
    for layer in range(n):
        act = cache[f"blocks.{layer}.attn.{name}"]
        out.append(act if learned else act[..., 0])
    return out


@torch.no_grad()
def sink_profile(
    model: Any, batch: TaskBatch, corpus: Int[Tensor, "batch pos"], learned: bool
) -> dict[str, Any]:
    """Sink mass per head on the corpus and the task, removal effect, threshold score."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    corpus_mass = torch.stack([p.mean(dim=(0, 2)) for p in _sink_probs(model, corpus, learned)])
    task = _sink_probs(model, batch.tokens, learned)
    rows = torch.arange(len(batch))
    at_answer = torch.stack([p[rows, :, batch.last] for p in task])  # [layer batch head]
    label = (batch.correct == batch.correct[0]).float()
    threshold = torch.zeros(n_layers, n_heads)
    for layer in range(n_layers):
        for head in range(n_heads):
            x = at_answer[layer, :, head]
            if x.std() > 1e-6 and label.std() > 0:
                threshold[layer, head] = torch.corrcoef(torch.stack([x, label]))[0, 1].abs()
    base = task_loss(model, batch, [])
    removal = torch.zeros(n_layers, n_heads)
    for layer in range(n_layers):
        for head in range(n_heads):
            hooks = _remove_sink_hooks(model, layer, head, learned)
            removal[layer, head] = task_loss(model, batch, hooks) - base
    return {
        "corpus_sink_mass": corpus_mass,
        "task_sink_mass": at_answer.mean(dim=1),
        "removal_effect": removal,
        "threshold_score": threshold,
        "task_loss": base,
    }


def _remove_sink_hooks(model: Any, layer: int, head: int, learned: bool) -> list:
    """Hooks removing one head's sink in log space. Learned sink: the head's pattern row becomes
    ``softmax(scores)`` over the real keys, from ``hook_attn_scores`` (exact even when the sink
    holds all the mass). First-token sink of a dense model: the row is renormalised as
    ``softmax(log pattern)`` with the first key (after the first query) at ``-inf``."""
    name = f"blocks.{layer}.attn"
    if learned:
        scores: dict[str, Tensor] = {}

        def from_scores(pattern: Tensor, hook: Any) -> Tensor:
            out = pattern.clone()
            out[:, head] = scores["s"][:, head].double().softmax(dim=-1).to(pattern.dtype)
            return out

        keep_scores = record(scores, "s", detach=False)
        return [(f"{name}.hook_attn_scores", keep_scores), (f"{name}.hook_pattern", from_scores)]

    def drop_first(pattern: Tensor, hook: Any) -> Tensor:
        out = pattern.clone()
        logs = out[:, head].double().log()
        logs[..., 1:, 0] = -torch.inf  # the first query can only attend to itself
        out[:, head] = logs.softmax(dim=-1).to(pattern.dtype)
        return out

    return [(f"{name}.hook_pattern", drop_first)]


@torch.no_grad()
def corresponding_heads(
    sparse: Any, dense: Any, batch: TaskBatch, top: int = 4
) -> list[tuple[tuple[int, int], tuple[int, int], float]]:
    """Pairs of heads that attend alike: for the ``top`` sparse heads with the best match, the
    dense head whose attention pattern on the task contexts is most similar (cosine of the
    whole pattern over real positions, averaged over examples):
    ``[(sparse (layer, head), dense (layer, head), similarity)]``."""

    def patterns(model: Any) -> Tensor:
        names = {f"blocks.{i}.attn.hook_pattern" for i in range(model.cfg.n_layers)}
        _, cache = model.run_with_cache(batch.tokens, names_filter=lambda n: n in names)
        # [layer*head, batch, query, key]
        return torch.cat(
            [
                cache[f"blocks.{i}.attn.hook_pattern"].transpose(0, 1)
                for i in range(model.cfg.n_layers)
            ]
        )

    ps, pd = patterns(sparse), patterns(dense)
    valid = torch.arange(batch.tokens.shape[1])[None, :] <= batch.last[:, None]  # [batch query]
    ps = ps * valid[None, :, :, None] * valid[None, :, None, :]
    pd = pd * valid[None, :, :, None] * valid[None, :, None, :]
    a = torch.nn.functional.normalize(ps.flatten(2), dim=-1)  # rows: [heads, batch, q*k]
    b = torch.nn.functional.normalize(pd.flatten(2), dim=-1)
    sim = torch.einsum("hbx,gbx->hg", a, b) / len(batch)  # [sparse heads, dense heads]
    n_s, n_d = sparse.cfg.n_heads, dense.cfg.n_heads
    order = sim.max(dim=1).values.argsort(descending=True)[:top].tolist()
    out = []
    for i in order:
        j = int(sim[i].argmax())
        out.append(((i // n_s, i % n_s), (j // n_d, j % n_d), float(sim[i, j])))
    return out
