"""Config of the few-shot classification experiments (Finn et al. 2017, Sec. 5.2)."""

from __future__ import annotations

from dataclasses import dataclass

from metarl.config import CommonConfig, ConfigError, option
from metarl.core.adapt import META_GRADIENT_MODES

DATASETS = ("omniglot", "mnist", "fashion-mnist", "image_folder")
BN_POLICIES = ("transductive", "support_statistics")


@dataclass
class ClassificationConfig(CommonConfig):
    """N-way K-shot classification with MAML. Defaults are the paper's Omniglot 5-way 1-shot.

    ``bn_policy`` defaults to ``transductive``, the paper's (and its code's) BatchNorm: the
    support set and the query set are each normalised with their own batch statistics, so a
    query prediction depends on the other query images of the episode. That is the protocol
    behind the published numbers, hence the default; ``support_statistics`` normalises the
    query images with the support set's statistics instead (no information flows between query
    images), at the price of one extra forward of the support set in the query pass.
    """

    # --- data --------------------------------------------------------------------------------
    dataset: str = option(
        "omniglot", "omniglot, mnist, fashion-mnist or image_folder", choices=DATASETS
    )
    data_dir: str | None = option(
        None,
        "data root holding <dataset>/ (image_folder: the folder itself); null: $METARL_DATA, "
        "else ../shared/data next to the repository",
    )
    split: str = option(
        "maml",
        "Omniglot split: maml (1100/100/423 characters, random 90° rotations per episode) or "
        "vinyals (the split lists, rotations as extra classes)",
        choices=("maml", "vinyals"),
    )
    train_classes: list[int] = option(
        [0, 1, 2, 3, 4],
        "(Fashion-)MNIST: labels used for meta-training; the other labels are meta-test",
        low=0,
        high=9,
    )
    image_size: int = option(84, "image_folder: images are resized to this square side", low=16)
    # --- episodes ----------------------------------------------------------------------------
    n_way: int = option(5, "classes per episode (N)", low=2)
    k_shot: int = option(1, "support images per class (K)", low=1)
    k_query: int = option(
        1, "query images per class during meta-training (the original code: K, as here)", low=1
    )
    # --- model -------------------------------------------------------------------------------
    filters: int = option(64, "channels of each of the 4 conv blocks", low=1)
    downsample: str = option(
        "stride",
        "stride (stride-2 convs, the paper's Omniglot net) or maxpool (its MiniImageNet net)",
        choices=("stride", "maxpool"),
    )
    bn_policy: str = option(
        "transductive",
        "BatchNorm statistics: transductive (support and query each their own batch, as the "
        "paper) or support_statistics (query normalised by the support set: no query leakage)",
        choices=BN_POLICIES,
    )
    # --- MAML --------------------------------------------------------------------------------
    iterations: int = option(60_000, "meta-training iterations", low=1)
    meta_batch_size: int = option(32, "tasks per meta-iteration", low=1)
    meta_lr: float = option(1e-3, "Adam learning rate of the outer loop", low=0.0)
    inner_lr: float = option(0.4, "inner step size α", low=0.0)
    inner_steps: int = option(1, "inner gradient steps during meta-training", low=0)
    meta_gradient: str = option(
        "second_order", "how the meta-gradient crosses the inner loop", choices=META_GRADIENT_MODES
    )
    fd_epsilon: float = option(
        1e-3, "perturbation of the finite-difference Hessian product", low=0.0
    )
    # --- evaluation (metarl evaluate) --------------------------------------------------------
    eval_episodes: int = option(600, "fixed test episodes", low=1)
    eval_seed: int = option(20_170_301, "seed of the test episodes (independent of `seed`)", low=0)
    eval_subset: str = option("test", "classes evaluated: test or val", choices=("test", "val"))
    eval_inner_steps: int = option(10, "gradient steps at test time (the paper: 10)", low=0)
    eval_k_query: int | None = option(
        None, "query images per class of a test episode; null: the same as k_query", low=1
    )
    eval_lr: float | None = option(None, "test-time step size; null: the same as inner_lr", low=0.0)
    eval_chunk: int = option(25, "test episodes adapted together (bounds memory)", low=1)

    def validate(self) -> None:
        super().validate()
        if self.dataset in ("mnist", "fashion-mnist"):
            train = set(self.train_classes)
            if len(train) != len(self.train_classes):
                raise ConfigError(f"train_classes: repeated labels in {self.train_classes}")
            if self.n_way > min(len(train), 10 - len(train)):
                raise ConfigError(
                    f"n_way={self.n_way}: train_classes {sorted(train)} leave "
                    f"{len(train)} meta-train and {10 - len(train)} meta-test labels; "
                    "each side needs at least n_way"
                )
            if self.eval_subset == "val":
                raise ConfigError("eval_subset: (Fashion-)MNIST has no validation classes")
        if self.dataset == "image_folder" and not self.data_dir:
            raise ConfigError("data_dir: image_folder needs the folder (with train.csv, ...)")

    @property
    def test_lr(self) -> float:
        """The test-time step size (``eval_lr``, else ``inner_lr``)."""
        return self.inner_lr if self.eval_lr is None else self.eval_lr

    @property
    def test_k_query(self) -> int:
        """Query images per class of a test episode (``eval_k_query``, else ``k_query``)."""
        return self.k_query if self.eval_k_query is None else self.eval_k_query
