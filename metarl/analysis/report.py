"""``metarl analyze RUN [--compare RUN2] --out DIR``: what a meta-learned network learned, side
by side with ordinary training — figures, numbers and a ``report.md`` that places them.

Top to bottom: load the runs and the test images; draw the first-layer filters, the 2-D
embeddings of the last hidden layer, the most and least activating images of units of the third
and fourth BatchNorm layers, class saliency and activation maximisation; measure the features on
the classes the meta-learned run never trained on (linear probe, nearest-centroid few-shot
accuracy), the clusters' separation, the layer-by-layer similarity of the two networks (linear
CKA), how much adaptation moves each layer, and the alignment of per-task gradients before and
after training; write it all down.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from metarl.algorithms import Problem
from metarl.algorithms.alignment import task_alignment
from metarl.analysis import figures
from metarl.analysis.data import analysis_images, episodes, held_out_classes, trained_classes
from metarl.analysis.models import Subject, first_layer, layer_outputs, load_subject
from metarl.analysis.numbers import (
    linear_cka,
    linear_probe_accuracy,
    nearest_centroid_accuracy,
    relative_change,
    silhouette,
)
from metarl.analysis.writeup import (
    ACTIVATION_MAX_STEPS,
    L2_WEIGHT,
    TV_WEIGHT,
    slug,
    write_up,
)
from metarl.config import ConfigError
from metarl.core import TaskBatch, get_params
from metarl.core.functional import single_forward
from metarl.run import read_metrics
from metarl.supervised.tasks import accuracy_per_task, cross_entropy_per_task

PROBE_CLASSES = 100  # at most this many held-out classes in the linear probe and nearest centroid
ACTIVATION_MAX_LR = 0.05  # Adam on the input; the objective: metarl.analysis.writeup


def analyze(
    run: str | Path,
    compare: str | Path | None,
    out: str | Path,
    points: int = 2000,
    units: list[int] | None = None,
    tasks: int = 16,
    episodes: int = 600,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Analyse ``run`` (and ``compare`` beside it) into ``out``: PNG figures, ``numbers.json``
    and ``report.md``.

    Args:
        run: a run directory (a few-shot run with ``network=mlp``, or a ``standard-*`` run).
        compare: a second run on the same dataset, or None.
        out: the folder to write.
        points: test images embedded with PCA and t-SNE, and compared by CKA.
        units: the units of the third and fourth BatchNorm layers whose activating images are
            shown (default: the 4 of largest variance over the test images, per model).
        tasks: test tasks of the gradient alignment.
        episodes: few-shot episodes of the nearest-centroid accuracy.
        seed: every random choice of the analysis.
        progress: say what is being done.

    Returns:
        The numbers (also written to ``numbers.json``).

    Raises:
        ConfigError: a run that cannot be analysed, or two runs on different datasets.
    """
    from tqdm.auto import tqdm

    from metarl.runtime import missing_extra

    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise missing_extra(
            "scikit-learn", "analysis", "metarl analyze's embeddings and probes"
        ) from None
    started = time.perf_counter()
    # --- the runs and the test images ---------------------------------------------------------
    images, labels, dataset = analysis_images(run)
    generator = torch.Generator().manual_seed(seed)
    reference = images[torch.randperm(len(images), generator=generator)[:1000]]
    subjects = [load_subject(run, reference)]
    if compare is not None:
        subjects.append(load_subject(compare, reference))
        if subjects[1].config.dataset != dataset:
            raise ConfigError(
                f"{compare} is a {subjects[1].config.dataset} run, {run} a {dataset} run"
            )
        if subjects[1].name == subjects[0].name:
            subjects[1].name += " (2)"
    held_out, held_out_note = held_out_classes(subjects)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = tqdm(total=8, disable=not progress, desc="analyze", unit="stage", dynamic_ncols=True)

    def stage(text: str) -> None:
        stages.set_postfix_str(text)
        stages.update()

    chosen = torch.randperm(len(images), generator=generator)[:points]
    # The 2-D views colour points by class: Omniglot's are the first 10 held-out characters'.
    # Classes to draw (embedding colours, saliency columns): all of (Fashion-)MNIST's held-out
    # labels; a seeded 10 of Omniglot's 523 held-out characters (their alphabets vary).
    drawn = held_out
    if len(held_out) > 10:
        drawn = [held_out[i] for i in torch.randperm(len(held_out), generator=generator)[:10]]
    embedded_points = chosen
    if dataset == "omniglot":  # the drawn characters' images, every one
        embedded_points = torch.isin(labels, torch.tensor(drawn)).nonzero().squeeze(1)
    n_way = next((s.config.n_way for s in subjects if s.meta_learned), 5)
    numbers: dict[str, Any] = {
        "dataset": dataset,
        "runs": {s.name: str(s.run.run_dir) for s in subjects},
        "held_out_classes": held_out,
        "held_out_note": held_out_note,
    }

    # --- 1. first-layer filters -----------------------------------------------------------------
    figures.filters({s.name: first_layer(s.frozen, images.shape[-1]) for s in subjects},
                    out / "filters.png")  # fmt: skip
    stage("filters")

    # --- 2. the last hidden layer in 2-D; cluster separation ----------------------------------
    outputs = {s.name: layer_outputs(s.frozen, images) for s in subjects}
    last = {
        name: o[max((k for k in o if k.startswith("hidden")), key=_depth)]
        for name, o in outputs.items()
    }
    embedded = {name: _embed(features[embedded_points], seed) for name, features in last.items()}
    figures.embeddings(embedded, labels[embedded_points], out / "embeddings.png")
    numbers["silhouette"] = {
        name: {
            "features": silhouette(last[name][embedded_points], labels[embedded_points]),
            **{method: silhouette(xy, labels[embedded_points]) for method, xy in by_method.items()},
        }
        for name, by_method in embedded.items()
    }
    stage("embeddings")

    # --- 3. most and least activating images of units of norm3 and norm4 ---------------------
    numbers["activating_units"] = {}
    for s in subjects:
        rows, shown = [], {}
        for layer in ("norm3", "norm4"):
            acts = outputs[s.name][layer]
            picked = units if units is not None else acts.var(dim=0).topk(4).indices.tolist()
            shown[layer] = picked
            for u in picked:
                order = acts[:, u].argsort(descending=True)
                rows.append((f"{layer} #{u}", images[order[:8], 0], images[order[-8:], 0]))
        numbers["activating_units"][s.name] = shown
        figures.activating_examples(rows, out / f"activating_{slug(s.name)}.png", s.name)
    stage("activating examples")

    # --- 4. class saliency and activation maximisation ----------------------------------------
    classes = drawn[:n_way]
    saliency_inputs = torch.stack([images[labels == c][0] for c in classes])
    rows = {"input": saliency_inputs[:, 0]}
    for s in subjects:
        score = _class_scores(s, images, labels, classes)
        if score is not None:
            rows[s.name] = _saliency(score, saliency_inputs)
    title = "class saliency |∂ score / ∂ input| on held-out classes"
    figures.image_rows(rows, out / "saliency.png", title, cmap="hot",
                       columns_title=[str(c) for c in classes])  # fmt: skip
    maximised = {}
    for s in subjects:
        layer_units = numbers["activating_units"][s.name]["norm4"]
        maximised[s.name] = torch.stack(
            [_maximise(s.frozen, "norm4", u, seed) for u in layer_units]
        )
    figures.image_rows(maximised, out / "activation_max.png", "inputs maximising units of norm4",
                       cmap="gray_r")  # fmt: skip
    stage("saliency, activation maximisation")

    # --- 5. features on held-out classes: linear probe, nearest centroid ---------------------
    probed = held_out  # Omniglot's 523: a seeded 100 of them keep the probes to seconds
    if len(held_out) > PROBE_CLASSES:
        pick = torch.randperm(len(held_out), generator=generator)[:PROBE_CLASSES]
        probed = sorted(held_out[i] for i in pick.tolist())
    numbers["probed_classes"] = len(probed)
    mask = torch.isin(labels, torch.tensor(probed))
    split = torch.randperm(int(mask.sum()), generator=generator)
    half = len(split) // 2
    numbers["linear_probe"], numbers["nearest_centroid"] = {}, {}
    for s in subjects:
        for stage_name, model in (("trained", s.frozen), ("initial", s.initial)):
            feats = _last_hidden(model, images[mask])
            y = labels[mask]
            key = f"{s.name} ({stage_name})"
            numbers["linear_probe"][key] = linear_probe_accuracy(
                feats[split[:half]], y[split[:half]], feats[split[half:]], y[split[half:]]
            )
            numbers["nearest_centroid"][key] = {
                f"{min(5, len(probed))}-way {k}-shot": nearest_centroid_accuracy(
                    feats,
                    y,
                    min(5, len(probed)),
                    k,
                    15,
                    episodes,
                    torch.Generator().manual_seed(seed),
                )._asdict()
                for k in (1, 5)
            }
    stage("probes")

    # --- 6. layer-by-layer similarity (linear CKA) ---------------------------------------------
    numbers["cka"] = {}
    for s in subjects:
        initial = layer_outputs(s.initial, images[chosen])
        numbers["cka"][f"{s.name} vs its initialisation"] = {
            layer: linear_cka(outputs[s.name][layer][chosen], initial[layer]) for layer in initial
        }
    if len(subjects) == 2:
        a, b = (s.name for s in subjects)
        numbers["cka"][f"{a} vs {b}"] = {
            layer: linear_cka(outputs[a][layer][chosen], outputs[b][layer][chosen])
            for layer in outputs[a] if layer in outputs[b]
        }  # fmt: skip
    stage("CKA")

    # --- 7. what adaptation changes, layer by layer ------------------------------------------
    numbers["adaptation_change"] = {}
    for s in subjects:
        if s.meta_learned:
            numbers["adaptation_change"][s.name] = _adaptation_change(
                s, images, labels, held_out, seed
            )
    stage("adaptation")

    # --- 8. gradient alignment across tasks, before and after training -----------------------
    numbers["alignment"], matrices = {}, {}
    for s in subjects:
        for stage_name, trained in (("initial", False), ("trained", True)):
            batch, model = _alignment_tasks(s, images, labels, held_out, tasks, seed, trained)
            problem = Problem(cross_entropy_per_task, accuracy_per_task, "accuracy")
            result = task_alignment(model, problem, batch)
            key = f"{s.name} ({stage_name})"
            matrices[key] = result.cosine
            numbers["alignment"][key] = {k: v for k, v in result._asdict().items() if k != "cosine"}
    figures.cosine_matrices(matrices, out / "gradient_cosines.png", tasks)
    series = {}
    for s in subjects:
        logged = [m for m in read_metrics(s.run.run_dir) if "align/same_task_cosine" in m]
        if logged:
            series[s.name] = ([m["iteration"] for m in logged],
                              [m["align/same_task_cosine"] for m in logged],
                              [m["align/across_task_cosine"] for m in logged])  # fmt: skip
    if series:
        figures.alignment_over_training(series, out / "alignment_training.png")
    stage("gradient alignment")
    stages.close()

    numbers["seconds"] = time.perf_counter() - started
    (out / "numbers.json").write_text(json.dumps(numbers, indent=2) + "\n")
    (out / "report.md").write_text(write_up(numbers, subjects, bool(series)))
    return numbers


# --- models as functions ------------------------------------------------------------------------
def _depth(name: str) -> int:
    return int("".join(ch for ch in name if ch.isdigit()))


def _last_hidden(model: nn.Sequential, images: Tensor) -> Tensor:
    outputs = layer_outputs(model, images)
    return outputs[max((k for k in outputs if k.startswith("hidden")), key=_depth)]


def _embed(features: Tensor, seed: int) -> dict[str, Tensor]:
    """PCA and t-SNE (scikit-learn; perplexity 30, PCA initialisation) of ``features``."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = features.double().numpy()
    return {
        "PCA": torch.from_numpy(PCA(2, random_state=seed).fit_transform(x)),
        "t-SNE": torch.from_numpy(
            TSNE(2, init="pca", perplexity=30, random_state=seed).fit_transform(x)
        ),
    }


def _class_scores(
    s: Subject, images: Tensor, labels: Tensor, classes: list[int]
) -> Callable[[Tensor], Tensor] | None:
    """``x (n, 1, 28, 28) -> (n, len(classes))``: each held-out class's score. A meta-learned
    model is first adapted to an episode of those classes (the next 5 test images of each, its
    own steps and step size); ordinary training scores with its own logits of those classes
    (None if it has none)."""
    if s.meta_learned:
        support_x = torch.cat([images[labels == c][1:6] for c in classes])
        support_y = torch.arange(len(classes)).repeat_interleave(5)
        adapted = s.frozen_params(s.run.adapt(support_x, support_y))
        return lambda x: single_forward(s.frozen, adapted, x)
    if getattr(s.config, "classes", "all") != "all":
        return None
    return lambda x: s.frozen(x)[:, classes]


def _saliency(score: Callable[[Tensor], Tensor], inputs: Tensor) -> Tensor:
    """``|∂ score_c(x_c) / ∂ x_c|`` for the c-th input and class (Simonyan et al. 2014)."""
    x = inputs.clone().requires_grad_(True)
    chosen = score(x).diagonal().sum()
    (grad,) = torch.autograd.grad(chosen, x)
    return grad.abs()[:, 0]


def _maximise(model: nn.Sequential, layer: str, unit: int, seed: int) -> Tensor:
    """An input in [0, 1] that excites ``unit`` of ``layer`` (see :data:`L2_WEIGHT`)."""
    cut = _layer_index(model, layer)
    head = model[: cut + 1]
    x = 0.5 + 0.01 * torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    x.requires_grad_(True)
    optimiser = torch.optim.Adam([x], lr=ACTIVATION_MAX_LR)
    for _ in range(ACTIVATION_MAX_STEPS):
        activation = head(x)[0, unit].mean()  # a channel: its mean over space
        tv = (x[..., 1:, :] - x[..., :-1, :]).abs().sum() + (x[..., 1:] - x[..., :-1]).abs().sum()
        objective = activation - L2_WEIGHT * (x - 0.5).square().sum() - TV_WEIGHT * tv
        optimiser.zero_grad()
        (-objective).backward()
        optimiser.step()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
    return x.detach()[0, 0]


def _layer_index(model: nn.Sequential, layer: str) -> int:
    """Index in ``model`` of ``norm3`` (the third FrozenNorm) and the like."""
    from metarl.analysis.models import FrozenNorm

    kind = FrozenNorm if layer.startswith("norm") else nn.ReLU
    seen = 0
    for i, module in enumerate(model):
        if isinstance(module, kind):
            seen += 1
            if seen == _depth(layer):
                return i
    raise ValueError(f"no layer {layer}")


def _adaptation_change(
    s: Subject, images: Tensor, labels: Tensor, classes: list[int], seed: int
) -> dict[str, float]:
    """Mean relative change of each parameter tensor after the run's own inner loop (its
    training steps and step size) on 100 episodes of the held-out classes."""
    config = s.config
    generator = torch.Generator().manual_seed(seed)
    batch = episodes(images, labels, classes, 100, config.n_way, config.k_shot, config.k_query,
                      generator, lambda c, position: position)  # fmt: skip
    problem = Problem(cross_entropy_per_task, accuracy_per_task, "accuracy")
    *_, adapted = s.run.algorithm.adapt_steps(s.run.model, batch, problem, config.inner_steps)
    change = relative_change({n: p.detach() for n, p in get_params(s.run.model).items()},
                             {n: p.detach() for n, p in adapted.items()})  # fmt: skip
    return {_readable(s.run.model, name): value for name, value in change.items()}


def _readable(model: nn.Module, name: str) -> str:
    """``"4.weight"`` → ``"linear2.weight"``: Sequential indices as the layers' kinds; Conv4's
    ``blocks.1.conv.weight`` → ``conv2.weight``, ``blocks.1.bn.bias`` → ``norm2.bias``."""
    if name.startswith("blocks."):
        _, block, kind, leaf = name.split(".")
        return f"{'conv' if kind == 'conv' else 'norm'}{int(block) + 1}.{leaf}"
    if name.startswith("head."):
        return name
    index, _, leaf = name.partition(".")
    kind = type(model[int(index)])
    count = sum(isinstance(m, kind) for m in list(model)[: int(index) + 1])
    prefix = "linear" if kind is nn.Linear else "norm"
    return f"{prefix}{count}.{leaf}"


def _alignment_tasks(
    s: Subject, images: Tensor, labels: Tensor, held_out: list[int], n_tasks: int, seed: int,
    trained: bool,
) -> tuple[TaskBatch, nn.Module]:  # fmt: skip
    """Episodes for a model's gradient alignment, labelled as the model labels them, and the
    model as it is used: a meta-learned one normalises each batch by itself (its protocol), an
    ordinary one with its frozen statistics."""
    generator = torch.Generator().manual_seed(seed)
    n_way = getattr(s.config, "n_way", 5)
    if s.meta_learned:
        from metarl.experiments import get_experiment

        model = (
            s.run.model if trained else get_experiment(s.config.experiment).build_model(s.config)
        )
        return episodes(images, labels, held_out, n_tasks, n_way, 1, 5, generator,
                         lambda c, position: position), model  # fmt: skip
    model = s.frozen if trained else s.initial
    if getattr(s.config, "classes", "all") == "all":
        return episodes(images, labels, held_out, n_tasks, n_way, 1, 5, generator,
                         lambda c, position: c), model  # fmt: skip
    own = trained_classes(s.config)
    return episodes(images, labels, own, n_tasks, min(n_way, len(own)), 1, 5, generator,
                     lambda c, position: own.index(c)), model  # fmt: skip


# --- the report ---------------------------------------------------------------------------------
