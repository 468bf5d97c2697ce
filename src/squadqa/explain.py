"""Why a run gives the answer it gives: `squadqa explain` and `POST /v1/explain`.

The answer explained is exactly the one `squadqa answer` gives: `QAPredictor.answer` on the same
windows and the same span chooser, then the window it came from (`window_candidates`, the one
span selection, run per window). On that window:

* **Integrated gradients** (Sundararajan et al. 2017; captum's BERT SQuAD tutorial) of the chosen
  start logit and end logit over the word embeddings: the path runs from a baseline (the `[PAD]`
  embedding, or zeros, at every question and context token; `[CLS]` and `[SEP]` keep theirs, as
  in captum's tutorial, so the baseline is still a well-formed input) to the input, its integral
  taken by a quadrature rule (`quadrature`) with the steps batched through the model. A token's
  attribution is the sum over the hidden dimension of (input - baseline) x mean gradient; by
  completeness they add up to logit(input) - logit(baseline), and the gap is reported. What is
  not a word embedding (positions, token types, the question-match feature) stays as it is.
* **Attention** of every layer and head: the question tokens' rows over the context tokens, the
  answer tokens' rows over the whole window, and per head the mean row entropy and the shares
  that go to `[CLS]`, to `[SEP]` and to the question (Clark et al. 2019: heads that park on
  `[SEP]` do next to nothing). Taken from the model's own layers
  (`TransformerBlock.attention_probabilities`).

Gradients come from the run's own backend (torch.autograd, jax.vjp or tf.GradientTape:
`gradients`); Keras 3 has no backend-independent gradient function.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from squadqa.data import Example
from squadqa.features import CLS_INDEX, pad_batch
from squadqa.postprocess import extract_answers, window_candidates
from squadqa.scoring import predict_logits

if TYPE_CHECKING:
    from squadqa.inference import QAPredictor

BASELINES = ("pad", "zeros")  # the first is the default
METHODS = ("trapezoid", "riemann", "gausslegendre")  # the first is the default
# The default number of points on the path: 32 trapezoid points kept MiniLM's completeness gap
# within 0.13% (0.04% at most on two seeded heads, where 16 Gauss-Legendre points left up to
# 4.6%) at half the time of 64 (benchmarks/explain.py).
STEPS = 32
BATCH_SIZE = 16  # path points per gradient pass (MiniLM: 32 cost no less per point on a CPU)
EXPLANATION = "explain.json"
TARGETS = ("start", "end")
# Attention probabilities are rounded to this many decimals in the output (JSON size: a MiniLM
# window holds 72 heads of question-by-context rows).
ATTENTION_DECIMALS = 5


class NothingToExplain(ValueError):
    """The question has no span to explain (a context without any token)."""


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points alpha in [0, 1] and weights (summing to 1) of the integral over the path.

    `trapezoid`: `steps` equally spaced points with both ends, halved end weights; `riemann`:
    the midpoints of `steps` equal intervals; `gausslegendre`: `steps`-point Gauss-Legendre
    (captum's default; exact for polynomials of degree < 2 steps).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive integer")
    if method == "trapezoid":
        if steps < 2:
            raise ValueError("the trapezoid rule needs steps >= 2 (both ends of the path)")
        alphas = np.linspace(0.0, 1.0, steps)
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
    elif method == "riemann":
        alphas = (np.arange(steps) + 0.5) / steps
        weights = np.full(steps, 1.0 / steps)
    else:
        nodes, node_weights = np.polynomial.legendre.leggauss(steps)
        alphas, weights = (nodes + 1) / 2, node_weights / 2
    return alphas, weights


def gradients(fn: Callable[[Any], Any], z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outputs ``[batch, T]`` of `fn` at `z` and their gradients ``[T, *z.shape]``.

    `fn` maps a backend tensor ``[batch, ...]`` to ``[batch, T]``, each row depending on its own
    input row only (a model in inference), so the gradient of column t summed over the batch is
    every row's own gradient. One forward pass, T backward passes, with the Keras backend's own
    autodiff.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        with torch.enable_grad():
            x = keras.ops.convert_to_tensor(z).detach().requires_grad_(True)
            out = fn(x)
            columns = out.shape[1]
            grads = [
                torch.autograd.grad(out[:, t].sum(), x, retain_graph=t < columns - 1)[0]
                for t in range(columns)
            ]
        return out.detach().cpu().numpy(), torch.stack(grads).cpu().numpy()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        out, pullback = jax.vjp(fn, jnp.asarray(z))
        grads = [pullback(jnp.zeros_like(out).at[:, t].set(1.0))[0] for t in range(out.shape[1])]
        return np.asarray(out), np.stack([np.asarray(g) for g in grads])
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(z)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            out = fn(x)
            columns = [out[:, t] for t in range(out.shape[1])]  # recorded on the tape too
        grads = [tape.gradient(column, x).numpy() for column in columns]
        del tape
        return out.numpy(), np.stack(grads)
    raise ValueError(f"explain needs gradients, which the {backend!r} backend does not give")


def integrated_gradients(
    fn: Callable[[Any], Any],
    x: np.ndarray,
    baseline: np.ndarray,
    steps: int = STEPS,
    method: str = METHODS[0],
    batch_size: int = BATCH_SIZE,
) -> np.ndarray:
    """Attributions ``[T, *x.shape]``: (x - baseline) times the mean gradient of each of `fn`'s
    T outputs along the straight path from `baseline` to `x` (`quadrature`'s points, evaluated
    `batch_size` at a time). `fn`: as for `gradients`, on a batch of points ``[batch, *x.shape]``.
    """
    if x.shape != baseline.shape:
        raise ValueError(f"input shape {x.shape} and baseline shape {baseline.shape} differ")
    alphas, weights = quadrature(method, steps)
    x = np.asarray(x, np.float32)
    delta = x - np.asarray(baseline, np.float32)
    total: np.ndarray | None = None
    for first in range(0, len(alphas), batch_size):
        a = alphas[first : first + batch_size].astype(np.float32)
        points = baseline[None] + a.reshape(-1, *[1] * x.ndim) * delta[None]
        _, grads = gradients(fn, points.astype(np.float32))  # [T, batch, *x.shape]
        w = weights[first : first + batch_size].reshape(1, -1, *[1] * x.ndim)
        part = (grads.astype(np.float64) * w).sum(axis=1)
        total = part if total is None else total + part
    assert total is not None
    return (total * delta[None]).astype(np.float64)


def head_summaries(probs: np.ndarray, question: Sequence[int], sep: Sequence[int]) -> dict:
    """Per layer and head (``[layers][heads]`` lists), averaged over the window's rows: the
    entropy of a row (nats) and the shares of attention that go to `[CLS]`, to the `[SEP]`s and
    to the question tokens. `probs`: ``[layers, heads, queries, keys]``."""
    p = probs.astype(np.float64)
    entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1).mean(-1)
    return {
        "entropy": entropy.tolist(),
        "cls": p[..., CLS_INDEX].mean(-1).tolist(),
        "sep": p[..., list(sep)].sum(-1).mean(-1).tolist(),
        "question": p[..., list(question)].sum(-1).mean(-1).tolist(),
    }


class Explainer:
    """Explanations of one loaded run's answers (a `QAPredictor` on the Keras runtime).

    Explanations run one at a time (a lock): each holds a batch of `batch_size` gradient
    passes in memory. They call the model beside the predictor's own calls (answers in other
    threads), which is safe: inference only reads the weights.
    """

    def __init__(self, predictor: QAPredictor, batch_size: int = BATCH_SIZE) -> None:
        model = predictor.model
        if not hasattr(model, "encoder_layers"):
            raise ValueError(
                f"explain needs the run's Keras model (model.keras), not {type(model).__name__}: "
                "gradients and attention come from its layers (use the keras runtime)"
            )
        self.predictor, self.model, self.batch_size = predictor, model, batch_size
        self._lock = threading.Lock()

    def explain(
        self,
        context: str,
        question: str,
        steps: int = STEPS,
        baseline: str = BASELINES[0],
        method: str = METHODS[0],
    ) -> dict[str, Any]:
        """The explanation of `question`'s answer in `context` (what explain.json holds)."""
        if baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
        quadrature(method, steps)  # validates both before any model work
        with self._lock:
            return self._explain(context, question, steps, baseline, method)

    def _explain(
        self, context: str, question: str, steps: int, baseline: str, method: str
    ) -> dict[str, Any]:
        import keras

        predictor = self.predictor
        example = Example(id="0", title="", context=context, question=question, answers=())
        features = predictor.features([example])
        tokenizer = predictor.tokenizer
        starts, ends = predict_logits(  # the batches `answer` runs: the same logits, once
            self.model, features, tokenizer.pad_id, predictor.batch_size, predictor.length_multiple
        )
        predictions = extract_answers(
            [example], features, starts, ends, predictor.span_config, predictor.top_map
        )
        answer = predictor.answers_of([example], predictions, top_k=3)[0]
        if not answer["alternatives"]:
            raise NothingToExplain("the context has no tokens: there is no answer to explain")
        span = answer["alternatives"][0]  # the answer itself, or the best span of "no answer"
        f, s, e = _answer_window(features, starts, ends, context, predictor.span_config, span)

        inputs = pad_batch(features, [f], tokenizer.pad_id, multiple=1)
        ids = features.input_ids[f]
        n, first = len(ids), int(features.context_start[f])
        special = [CLS_INDEX, first - 1, n - 1]
        table = keras.ops.convert_to_numpy(self.model.embeddings.word_embeddings.embeddings)
        x = table[ids].astype(np.float32)
        reference = np.zeros_like(x)
        if baseline == "pad":
            reference[:] = table[tokenizer.pad_id]
        reference[special] = x[special]

        def logits_at(points: Any) -> Any:
            batch = {k: np.repeat(v, points.shape[0], axis=0) for k, v in inputs.items()}
            out = self.model({**batch, "word_embeddings": points}, training=False)
            return keras.ops.stack([out["start_logits"][:, s], out["end_logits"][:, e]], axis=-1)

        attributions = integrated_gradients(
            logits_at, x, reference, steps, method, self.batch_size
        ).sum(-1)  # [2, n]: over the hidden dimension
        path_ends = keras.ops.convert_to_numpy(
            logits_at(keras.ops.convert_to_tensor(np.stack([reference, x])))
        )  # [baseline, input] x [start, end]
        completeness = {}
        for t, target in enumerate(TARGETS):
            at_input, at_baseline = float(path_ends[1, t]), float(path_ends[0, t])
            total, difference = float(attributions[t].sum()), at_input - at_baseline
            completeness[target] = {
                "attribution_sum": total,
                "logit": at_input,
                "baseline_logit": at_baseline,
                "difference": difference,
                "gap": total - difference,
                "relative_gap": abs(total - difference) / max(abs(difference), 1e-12),
            }

        return {
            "model": predictor.name,
            "backend": keras.backend.backend(),
            "context": context,
            "question": question,
            "answer": answer,
            "span": {
                "text": span["text"],
                "start": span["start"],
                "end": span["end"],
                "start_token": s,
                "end_token": e,
                "start_logit": float(starts[f][s]),
                "end_logit": float(ends[f][e]),
            },
            "window": {"index": f, "windows": len(features), "context_start": first, "length": n},
            "tokens": _tokens(tokenizer, ids, features.offsets[f], question, first),
            "integrated_gradients": {"steps": steps, "method": method, "baseline": baseline},
            "attributions": {t: attributions[i].tolist() for i, t in enumerate(TARGETS)},
            "completeness": completeness,
            "attention": self._attention(inputs, first, s, e),
        }

    def _attention(self, inputs: dict, first: int, s: int, e: int) -> dict[str, Any]:
        """The window's attention (`first`: its first context token; s-e: the answer's tokens)."""
        import keras

        states = self.model.layer_states(inputs, training=False)
        probs = np.stack(
            [
                keras.ops.convert_to_numpy(
                    block.attention_probabilities(state, inputs["attention_mask"])
                )[0]
                # states[i] is block i's input (the last state, the encoder's output, is unused)
                for block, state in zip(self.model.encoder_layers, states, strict=False)
            ]
        )  # [layers, heads, n, n]
        n = probs.shape[-1]
        question_rows, context_columns = list(range(1, first - 1)), list(range(first, n - 1))
        rounded = np.round(probs.astype(np.float64), ATTENTION_DECIMALS)  # short JSON numbers
        return {
            "layers": int(probs.shape[0]),
            "heads": int(probs.shape[1]),
            "question_rows": question_rows,
            "context_columns": context_columns,
            "answer_rows": list(range(s, e + 1)),
            "question_to_context": rounded[:, :, question_rows][..., context_columns].tolist(),
            "answer_to_window": rounded[:, :, s : e + 1].tolist(),
            "heads_summary": head_summaries(probs, question_rows, [first - 1, n - 1]),
        }


def _answer_window(
    features: Any,
    starts: Sequence[np.ndarray],
    ends: Sequence[np.ndarray],
    context: str,
    span_config: Any,
    span: dict,
) -> tuple[int, int, int]:
    """(window, start token, end token) the span was chosen from: the window whose candidates
    (the span chooser's own, `window_candidates`) hold it with the best score, as
    `extract_answers` keeps it."""
    best = None
    for f in range(len(features)):
        s_logits = np.asarray(starts[f], dtype=np.float64)
        e_logits = np.asarray(ends[f], dtype=np.float64)
        for c in window_candidates(s_logits, e_logits, features.offsets[f], context, span_config):
            if (c.start, c.end) == (span["start"], span["end"]) and (
                best is None or c.score > best[0].score
            ):
                best = (c, f, s_logits, e_logits)
    if best is None:
        raise RuntimeError(f"no window holds the answer span {span['start']}-{span['end']}")
    candidate, f, s_logits, e_logits = best
    offsets = features.offsets[f]
    s = next(
        i
        for i in np.flatnonzero(offsets[:, 0] == candidate.start)
        if s_logits[i] == candidate.start_logit
    )
    e = next(
        i
        for i in np.flatnonzero(offsets[:, 1] == candidate.end)
        if i >= s and e_logits[i] == candidate.end_logit
    )
    return f, int(s), int(e)


def _tokens(
    tokenizer: Any, ids: np.ndarray, offsets: np.ndarray, question: str, first: int
) -> list[dict[str, Any]]:
    """Each window token: its vocabulary piece, segment, and character span (context tokens:
    in the context; question tokens: in the question; `[CLS]`/`[SEP]`: -1)."""
    question_offsets = tokenizer.encode_batch([question])[0].offsets
    tokens = []
    for i, token_id in enumerate(ids):
        piece = tokenizer.tokenizer.id_to_token(int(token_id))
        if i == CLS_INDEX or i == first - 1 or i == len(ids) - 1:
            segment, (start, end) = ("cls" if i == CLS_INDEX else "sep"), (-1, -1)
        elif i < first:
            segment, (start, end) = "question", question_offsets[i - 1]
        else:
            segment, (start, end) = "context", offsets[i]
        tokens.append({"text": piece, "segment": segment, "start": int(start), "end": int(end)})
    return tokens


# --------------------------------------------------------------------------- text and pictures


def summary_lines(explanation: dict[str, Any], top: int = 5) -> list[str]:
    """A few lines for the terminal: the answer, the completeness gaps, the top tokens."""
    span, window = explanation["span"], explanation["window"]
    ig = explanation["integrated_gradients"]
    answer = explanation["answer"]
    said = "no answer (explaining the best span)" if answer["no_answer"] else "answer"
    lines = [
        f"Q: {explanation['question']}",
        f"{said}: {span['text']!r} (characters {span['start']}-{span['end']}; window "
        f"{window['index'] + 1} of {window['windows']}, tokens {span['start_token']}-"
        f"{span['end_token']})",
        f"integrated gradients: {ig['steps']} steps ({ig['method']}), baseline {ig['baseline']}",
    ]
    tokens = explanation["tokens"]
    for target in TARGETS:
        c = explanation["completeness"][target]
        values = np.asarray(explanation["attributions"][target])
        order = np.argsort(-np.abs(values), kind="stable")[:top]
        best = ", ".join(f"{tokens[i]['text']!r} {values[i]:+.3f}" for i in order)
        lines.append(
            f"  {target} logit {c['logit']:+.3f} (baseline {c['baseline_logit']:+.3f}): "
            f"attributions sum to {c['attribution_sum']:+.3f} of {c['difference']:+.3f} "
            f"(gap {100 * c['relative_gap']:.2f}%); top tokens: {best}"
        )
    heads = explanation["attention"]["heads_summary"]
    sep = np.asarray(heads["sep"])
    layer, head = np.unravel_index(int(np.argmax(sep)), sep.shape)
    lines.append(
        f"attention: {explanation['attention']['layers']} layers x "
        f"{explanation['attention']['heads']} heads; most on [SEP]: layer {layer + 1} head "
        f"{head + 1} ({sep[layer, head]:.0%} of its attention)"
    )
    return lines


def _context_pieces(explanation: dict[str, Any]) -> tuple[list[str], list[int | None]]:
    """The window's stretch of the context cut into text pieces, each with the token it shows
    (None for the text between tokens), so pictures shade tokens and keep the spaces."""
    context, tokens = explanation["context"], explanation["tokens"]
    pieces: list[str] = []
    owners: list[int | None] = []
    position = None
    for i, token in enumerate(tokens):
        if token["segment"] != "context":
            continue
        if position is not None and token["start"] > position:
            pieces.append(context[position : token["start"]])
            owners.append(None)
        if position is None or token["end"] > position:
            pieces.append(context[max(token["start"], position or 0) : token["end"]])
            owners.append(i)
            position = token["end"]
    return pieces, owners


def draw(explanation: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """PNG pictures: the context shaded by start and end attribution (`attributions.png`), the
    per-head summaries (`attention_heads.png`) and each layer's question-to-context attention,
    mean over heads (`attention_question_context.png`). Needs matplotlib (extra `report`)."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.transforms import ScaledTranslation

    from squadqa.report import new_figure

    out = Path(out_dir)
    written = []
    pieces, owners = _context_pieces(explanation)
    width, size = 110, 8  # characters per line, font size (points) of the monospaced text
    char_inches = 0.602 * size / 72  # DejaVu Sans Mono's advance is 0.602 em
    lines: list[list[tuple[str, int | None]]] = [[]]
    used = 0
    for text, owner in zip(pieces, owners, strict=True):
        for k, part in enumerate(text.split("\n")):  # only text between tokens holds "\n"
            if (k or used + len(part) > width) and lines[-1]:
                lines.append([])
                used = 0
            lines[-1].append((part, owner))
            used += len(part)
    answer_tokens = range(explanation["span"]["start_token"], explanation["span"]["end_token"] + 1)
    fig = new_figure(11, 1.2 + 0.44 * len(lines))
    cmap = colormaps["PiYG"]
    for k, target in enumerate(TARGETS):
        values = np.asarray(explanation["attributions"][target])
        scale = max(float(np.abs(values).max()), 1e-12)
        ax = fig.add_subplot(2, 1, k + 1)
        ax.set_axis_off()
        ax.set_xlim(0, 1)
        ax.set_ylim(len(lines), -0.5)
        ax.set_title(f"{target} logit: attribution by integrated gradients (green +, pink -)")
        for row, line in enumerate(lines):
            column = 0
            for text, owner in line:
                colour = "white" if owner is None else cmap(0.5 + 0.5 * values[owner] / scale)
                ax.text(
                    0,
                    row,
                    text.replace("$", r"\$"),
                    family="DejaVu Sans Mono",
                    fontsize=size,
                    transform=ax.transData
                    + ScaledTranslation(column * char_inches, 0, fig.dpi_scale_trans),
                    va="center",
                    fontweight="bold" if owner in answer_tokens else "normal",
                    bbox={"facecolor": colour, "edgecolor": "none", "pad": 0.6},
                )
                column += len(text)
    path = out / "attributions.png"
    fig.savefig(path)
    written.append(path)

    attention = explanation["attention"]
    summary = attention["heads_summary"]
    fig = new_figure(11, 2.2 + 0.35 * attention["layers"])
    titles = {
        "entropy": "row entropy (nats)",
        "cls": "share to [CLS]",
        "sep": "share to [SEP]",
        "question": "share to the question",
    }
    for k, (key, title) in enumerate(titles.items()):
        ax = fig.add_subplot(1, 4, k + 1)
        grid = np.asarray(summary[key])
        norm = Normalize(0, max(float(grid.max()), 1e-12) if key == "entropy" else 1)
        image = ax.imshow(grid, cmap="viridis", norm=norm, aspect="auto")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(grid.shape[1]), [str(h + 1) for h in range(grid.shape[1])], fontsize=6)
        ax.set_yticks(range(grid.shape[0]), [str(i + 1) for i in range(grid.shape[0])])
        fig.colorbar(image, ax=ax, shrink=0.8)
    path = out / "attention_heads.png"
    fig.savefig(path)
    written.append(path)

    tokens = explanation["tokens"]
    layers = attention["layers"]
    fig = new_figure(11, 1.5 + 1.6 * layers)
    columns = attention["context_columns"]
    rows = attention["question_rows"]
    for layer in range(layers):
        ax = fig.add_subplot(layers, 1, layer + 1)
        grid = np.asarray(attention["question_to_context"][layer]).mean(axis=0)
        if grid.size == 0:
            ax.set_axis_off()
            continue
        ax.imshow(grid, cmap="magma", aspect="auto", norm=Normalize(0, max(grid.max(), 1e-12)))
        ax.set_ylabel(f"layer {layer + 1}", fontsize=8)
        ax.set_yticks(range(len(rows)), [tokens[i]["text"] for i in rows], fontsize=5)
        if len(columns) <= 80 or layer == layers - 1:
            step = max(1, math.ceil(len(columns) / 80))
            ax.set_xticks(
                range(0, len(columns), step),
                [tokens[columns[j]]["text"] for j in range(0, len(columns), step)],
                fontsize=5,
                rotation=90,
            )
        else:
            ax.set_xticks([])
    fig.suptitle("question tokens (rows) attending to context tokens, mean over heads")
    path = out / "attention_question_context.png"
    fig.savefig(path)
    written.append(path)
    return written
