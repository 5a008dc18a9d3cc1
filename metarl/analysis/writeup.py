"""``report.md`` of ``metarl analyze``: each figure with one sentence on what it shows, and the
numbers (as :func:`metarl.analysis.report.analyze` returns them) as tables."""

from __future__ import annotations

from typing import Any

from metarl.analysis.models import Subject

ACTIVATION_MAX_STEPS = 300
L2_WEIGHT, TV_WEIGHT = 0.05, 0.1
"""Activation maximisation: maximise ``a_u(x) − L2_WEIGHT·‖x − ½‖² − TV_WEIGHT·TV(x)`` over
``x ∈ [0, 1]^{28×28}`` (TV: the summed absolute differences of neighbouring pixels), by Adam."""


def slug(name: str) -> str:
    """A model's name as a file-name part (``"MAML"`` -> ``"maml"``)."""
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")


def write_up(numbers: dict[str, Any], subjects: list[Subject], over_training: bool) -> str:
    names = [s.name for s in subjects]
    runs = ", ".join(f"{name}: `{path}`" for name, path in numbers["runs"].items())
    held_out = numbers["held_out_classes"]
    held = ", ".join(map(str, held_out)) + f" ({numbers['held_out_note']})"
    if len(held_out) > 20:
        held = numbers["held_out_note"]
    omniglot = numbers["dataset"] == "omniglot"
    filters = (
        "Each of the 64 first-layer 3×3 convolution kernels (red positive, blue negative)."
        if omniglot
        else "Each first-layer unit's incoming weights as a 28×28 image (red positive, blue "
        "negative)."
    )
    lines = [
        f"# What {' and '.join(names)} learned ({numbers['dataset']})",
        "",
        f"Runs: {runs}. Held-out classes: {held}. Written by "
        "`metarl analyze` in {:.0f} s.".format(numbers["seconds"]),
        "",
        "## First-layer filters",
        "",
        "![filters](filters.png)",
        "",
        filters,
        "",
        "## The last hidden layer in 2-D",
        "",
        "![embeddings](embeddings.png)",
        "",
        "PCA and t-SNE of the last hidden layer on the same test images, coloured by label. "
        "Silhouette of the labels (1: separated clusters, 0: overlapping):",
        "",
        "| model | features | PCA | t-SNE |",
        "|---|---|---|---|",
    ]
    for name, values in numbers["silhouette"].items():
        lines.append(
            f"| {name} | {values['features']:.3f} | {values['PCA']:.3f} | {values['t-SNE']:.3f} |"
        )
    lines += ["", "## Most and least activating test images", ""]
    for name in names:
        lines += [f"![activating {name}](activating_{slug(name)}.png)", ""]
    lines += [
        "Per unit of the third and fourth BatchNorm layers (the units of largest variance), the "
        "eight test images that excite it most (left) and least (right)."
        + (
            " A Conv-4 unit is a channel, its activation the channel's mean over space."
            if omniglot
            else ""
        ),
        "",
        "## Class saliency and activation maximisation",
        "",
        "![saliency](saliency.png)",
        "",
        "|∂ score / ∂ input| for one test image of each held-out class: the meta-learned model "
        "after adapting to an episode of those classes, ordinary training with its own logits.",
        "",
        "![activation maximisation](activation_max.png)",
        "",
        f"Inputs that excite the fourth BatchNorm layer's units: Adam on "
        f"a_u(x) − {L2_WEIGHT}·‖x − ½‖² − {TV_WEIGHT}·TV(x), x in [0, 1], "
        f"{ACTIVATION_MAX_STEPS} steps.",
        "",
        "## Features on the held-out classes",
        "",
        "Linear probe (logistic regression on half of the held-out test images, scored on the "
        "other half) and nearest-centroid few-shot accuracy (15 queries per class, 95% interval), "
        "for each model and its initialisation"
        + (
            f", over {numbers['probed_classes']} of the held-out classes (seeded)"
            if numbers.get("probed_classes", len(held_out)) < len(held_out)
            else ""
        )
        + ":",
        "",
        "| model | linear probe | "
        + " | ".join(next(iter(numbers["nearest_centroid"].values())))
        + " |",
        "|---|---|" + "---|" * len(next(iter(numbers["nearest_centroid"].values()))),
    ]
    for key, probe in numbers["linear_probe"].items():
        cells = [
            f"{100 * v['mean']:.1f} ± {100 * v['ci95']:.1f}%"
            for v in numbers["nearest_centroid"][key].values()
        ]
        lines.append(f"| {key} | {100 * probe:.1f}% | " + " | ".join(cells) + " |")
    initial = [k for k in numbers["linear_probe"] if k.endswith("(initial)")]
    if (
        len(initial) == 2
        and numbers["nearest_centroid"][initial[0]] == (numbers["nearest_centroid"][initial[1]])
    ):
        lines += ["", "The two initialisations are the same network (the runs share a seed)."]
    lines += ["", "## Layer-by-layer similarity (linear CKA)", ""]
    layers = list(next(iter(numbers["cka"].values())))
    lines += ["| pair | " + " | ".join(layers) + " |", "|---|" + "---|" * len(layers)]
    for pair, values in numbers["cka"].items():
        lines.append(
            f"| {pair} | " + " | ".join(f"{values.get(k, float('nan')):.3f}" for k in layers) + " |"
        )
    if numbers["adaptation_change"]:
        lines += ["", "## What adaptation changes", "",
                  "‖θ' − θ‖ / ‖θ‖ per parameter tensor after the run's own inner loop on 100 "
                  "held-out episodes (a large value: the layer adapts):", ""]  # fmt: skip
        changes = numbers["adaptation_change"]
        lines += ["| parameter | " + " | ".join(changes) + " |", "|---|" + "---|" * len(changes)]
        for tensor in next(iter(changes.values())):
            values = " | ".join(f"{c[tensor]:.4f}" for c in changes.values())
            lines.append(f"| {tensor} | {values} |")
        lines.append("")
    lines += [
        "## Gradient alignment across tasks",
        "",
        "![gradient cosines](gradient_cosines.png)",
        "",
        "Cosines of the per-task gradients of the loss (support sets, then query sets of the "
        "same tasks). To first order in α, MAML's objective rewards the inner product of a task's "
        "support and query gradients (Nichol et al. 2018, §5).",
        "",
        "| model | support·query, same task | across tasks | cosine, same task | across tasks |",
        "|---|---|---|---|---|",
    ]
    for key, v in numbers["alignment"].items():
        lines.append(f"| {key} | {v['same_task_inner']:.4g} | {v['across_task_inner']:.4g} | "
                     f"{v['same_task_cosine']:.3f} | {v['across_task_cosine']:.3f} |")  # fmt: skip
    if over_training:
        lines += ["", "![alignment over training](alignment_training.png)", "",
                  "The same cosines on each meta-batch during training (`align/*` in "
                  "metrics.jsonl)."]  # fmt: skip
    return "\n".join(lines) + "\n"
