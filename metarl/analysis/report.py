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
from pathlib import Path
from typing import Any

import torch

from metarl.algorithms import Problem
from metarl.algorithms.alignment import task_alignment
from metarl.analysis import figures, probes
from metarl.analysis.data import analysis_images, held_out_classes
from metarl.analysis.models import first_layer, layer_outputs, load_subject, norm_widths
from metarl.analysis.numbers import (
    linear_cka,
    linear_probe_accuracy,
    nearest_centroid_accuracy,
    silhouette,
)
from metarl.analysis.writeup import (
    slug,
    write_up,
)
from metarl.config import ConfigError
from metarl.run import read_metrics
from metarl.supervised.tasks import accuracy_per_task, cross_entropy_per_task

PROBE_CLASSES = 100  # at most this many held-out classes in the linear probe and nearest centroid


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
    from metarl.loop import progress_bar
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
                f"{compare} was trained on {subjects[1].config.dataset}, {run} on {dataset}: "
                "compared runs share a dataset"
            )
        resizes = [getattr(s.config, "omniglot_resize", "lanczos") for s in subjects]
        if dataset == "omniglot" and resizes[0] != resizes[1]:
            raise ConfigError(
                f"{run} saw Omniglot with omniglot_resize={resizes[0]}, {compare} with "
                f"{resizes[1]}: compared runs see the same images"
            )
        if subjects[1].name == subjects[0].name:
            subjects[1].name += " (2)"
    for s in subjects:  # checked before the embeddings and probes, which take minutes
        widths = norm_widths(s.frozen)
        for layer in ("norm3", "norm4"):
            if layer not in widths:
                raise ConfigError(
                    f"{s.run.run_dir}: its network has {len(widths)} BatchNorm layers; metarl "
                    "analyze shows units of the third and fourth (train with four hidden layers)"
                )
            if units is not None and max(units) >= widths[layer]:
                raise ConfigError(
                    f"--units {max(units)}: {s.name}'s {layer} has {widths[layer]} units"
                )
    held_out, held_out_note = held_out_classes(subjects)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = progress_bar(total=8, disable=not progress, desc="analyze", unit="stage")

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
        name: o[max((k for k in o if k.startswith("hidden")), key=probes.depth)]
        for name, o in outputs.items()
    }
    embedded = {
        name: probes.embed(features[embedded_points], seed) for name, features in last.items()
    }
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
        score = probes.class_scores(s, images, labels, classes)
        if score is not None:
            rows[s.name] = probes.saliency(score, saliency_inputs)
    title = "class saliency |∂ score / ∂ input| on held-out classes"
    figures.image_rows(rows, out / "saliency.png", title, cmap="hot",
                       columns_title=[str(c) for c in classes])  # fmt: skip
    maximised = {}
    for s in subjects:
        layer_units = numbers["activating_units"][s.name]["norm4"]
        maximised[s.name] = torch.stack(
            [probes.maximise(s.frozen, "norm4", u, seed) for u in layer_units]
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
            feats = probes.last_hidden(model, images[mask])
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
            numbers["adaptation_change"][s.name] = probes.adaptation_change(
                s, images, labels, held_out, seed
            )
    stage("adaptation")

    # --- 8. gradient alignment across tasks, before and after training -----------------------
    numbers["alignment"], matrices = {}, {}
    for s in subjects:
        for stage_name, trained in (("initial", False), ("trained", True)):
            batch, model = probes.alignment_tasks(s, images, labels, held_out, tasks, seed, trained)
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


# --- the report ---------------------------------------------------------------------------------
