"""A trained run from Python: its model and config, adapted to a new task, its predictions.

:func:`load_run` reads a run directory (``metarl train``'s, or a ``zoo/`` entry) into a
:class:`LoadedRun`; supervised runs adapt with :meth:`LoadedRun.adapt` and predict with
:meth:`LoadedRun.predict`, meta-RL runs adapt by sampling with :meth:`LoadedRun.adapt_policy`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from metarl.config import ConfigError
from metarl.core import Params, TaskBatch
from metarl.experiments import Experiment, get_experiment, stored_config
from metarl.run import CHECKPOINT, load_checkpoint, load_weights


class PolicyAdaptation(NamedTuple):
    """A meta-RL policy adapted to one task by sampling.

    Attributes:
        params: the policy's parameters after 0, 1, ..., steps gradient steps (no task
            dimension; pass one to ``policy.act(obs, params=...)``).
        returns: the mean undiscounted return of the episodes sampled with each.
    """

    params: list[Params]
    returns: list[float]


@dataclass
class LoadedRun:
    """A trained run, ready to use from Python.

    Attributes:
        model: the trained network (CPU, eval mode): for meta-RL a
            :class:`~metarl.rl.policy.GaussianMLPPolicy`.
        config: the run's validated config (its ``device`` is ``cpu``, where the model is).
        iteration: the model's meta-iteration (its epoch for ordinary training).
        run_dir: the run directory.
        which: ``best`` (meta-RL: the best model of training, the paper's protocol; few-shot:
            the best-validated) or ``last``.
        algorithm: meta-learned supervised runs: how the model adapts at test time (with its
            meta-learned step sizes); None for meta-RL and for ordinary training.
        checkpoint: the checkpoint, as stored (tensors and plain types).
    """

    model: nn.Module
    config: Any
    iteration: int
    run_dir: Path
    which: Literal["best", "last"]
    algorithm: Any
    checkpoint: dict[str, Any]

    @property
    def experiment(self) -> Experiment:
        """The run's experiment family: its model's input and target shapes, how its
        predictions are scored."""
        return get_experiment(self.config.experiment)

    def adapt(
        self,
        support_x: Tensor,
        support_y: Tensor,
        steps: int | None = None,
        step_size: float | list[float] | None = None,
    ) -> Params:
        """Supervised: adapt to one task's support set, as ``metarl evaluate`` does.

        Args:
            support_x: the task's inputs ``(K, *input_shape)``.
            support_y: their targets ``(K, *target_shape)`` (labels ``0..N−1`` for a classifier).
            steps: gradient steps (default the config's ``eval_steps``).
            step_size: the step size (default the algorithm's own: meta-learned or
                ``inner_lr``).

        Returns:
            The adapted parameters (no task dimension), for :meth:`predict`.

        Raises:
            ConfigError: a meta-RL or ordinary-training run, ``steps < 0``, or tensors the
                model does not take (e.g. ``(K,)`` for ``(K, 1)``).
        """
        from metarl.algorithms.maml import last

        if self.algorithm is None:
            raise ConfigError(f"adapt() adapts a meta-learned supervised run; {self._instead()}")
        steps = self.config.eval_steps if steps is None else steps
        if steps < 0:
            raise ConfigError(f"adapt(steps={steps}): give a number of steps ≥ 0")
        experiment = self.experiment
        io_shapes, scored = experiment.io_shapes, experiment.problem
        if io_shapes is None or scored is None:  # a family added without them
            raise ConfigError(f"adapt(): the family of {self.config.experiment} declares no "
                              "io_shapes or problem (metarl.experiments.Experiment)")  # fmt: skip
        inputs, targets = io_shapes(self.config)
        _check_shape("adapt", "support_x", support_x, inputs)
        _check_shape("adapt", "support_y", support_y, targets)
        if len(support_x) != len(support_y):
            raise ConfigError(f"adapt(): {len(support_x)} inputs but {len(support_y)} targets")
        problem = scored(self.config)
        one = TaskBatch(support_x[None], support_y[None], support_x[None], support_y[None])
        params = last(self.algorithm.adapt_steps(self.model, one, problem, steps, step_size))
        return {name: p[0] for name, p in params.items()}

    def predict(
        self, x: Tensor, params: Params | None = None, support_x: Tensor | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        """The model's output at ``params`` (default θ), without gradients.

        Args:
            x: a batch of inputs ``(B, *input_shape)``.
            params: parameters without a task dimension, as :meth:`adapt` returns them.
            support_x: the task's support inputs ``(K, *input_shape)``: needed by a classifier
                trained with ``bn_policy=support_statistics`` (its BatchNorm normalises a query
                by the support set, as its evaluation does) and refused by every other model,
                which takes no support set.

        Returns:
            ``(B, *output_shape)``: a classifier's logits, a regressor's predictions; for a
            policy the Gaussian's ``(mean, log_std)``, each ``(B, action_dim)``.

        Raises:
            ConfigError: ``x`` or ``support_x`` of a shape the model does not take, or
                ``support_x`` missing where the run needs it, or given where it does not.
        """
        from metarl.core import single_forward

        experiment = self.experiment
        if self._needs_support(experiment) != (support_x is not None):
            raise ConfigError(
                "predict(): this run normalises a query by its task's support set "
                "(bn_policy=support_statistics): pass support_x" if support_x is None else
                "predict(): this run's model takes no support set (only a classifier trained "
                "with bn_policy=support_statistics does): leave support_x out"
            )  # fmt: skip
        inputs = {"x": x} if support_x is None else {"x": x, "support_x": support_x}
        if experiment.io_shapes is not None:  # a policy's is its environment's
            shape = experiment.io_shapes(self.config)[0]
            for name, tensor in inputs.items():
                _check_shape("predict", name, tensor, shape)
        with torch.no_grad():
            if params is None:
                return self.model(*inputs.values())
            return single_forward(self.model, params, *inputs.values())

    def _needs_support(self, experiment: Experiment) -> bool:
        """Whether the model's query pass takes the support set (support-statistics BatchNorm)."""
        return experiment.problem is not None and (
            experiment.problem(self.config).query_inputs is not None
        )

    def adapt_policy(
        self,
        task: dict[str, Any],
        steps: int | None = None,
        episodes: int | None = None,
        seed: int = 0,
    ) -> PolicyAdaptation:
        """Meta-RL: adapt the policy to ``task`` by sampling episodes and taking REINFORCE
        steps, as ``metarl evaluate`` does, with its step sizes (the config's ``eval_lr`` if
        set, else ``inner_lr`` then ``inner_lr/2``; the last one repeats).

        Args:
            task: a task of the run's environment, e.g. ``{"velocity": 1.5}`` or
                ``{"goal": [0.3, -0.2]}`` (``env.sample_tasks`` draws some).
            steps: gradient steps (default the config's ``eval_steps``).
            episodes: episodes per step (default ``eval_episodes_per_task``).
            seed: the seed of the environment's resets and of the action noise.

        Returns:
            The parameters and mean returns before adaptation and after each step
            (``steps + 1`` of each).

        Raises:
            ConfigError: not a meta-RL run, or a task the environment cannot take.
        """
        from metarl.rl.config import RLConfig
        from metarl.rl.evaluate import adaptation_curve
        from metarl.rl.task_envs import make_batched_env

        if not isinstance(self.config, RLConfig):
            raise ConfigError(f"adapt_policy() adapts a meta-RL run; {self._instead()}")
        if steps is not None and steps < 0:
            raise ConfigError(f"adapt_policy(steps={steps}): give a number of steps ≥ 0")
        changes = {}
        if steps is not None:
            changes["eval_steps"] = steps
        if episodes is not None:
            changes["eval_episodes_per_task"] = episodes
        config = replace(self.config, **changes)
        env = make_batched_env(config.env, config.eval_episodes_per_task, config.horizon)
        env.seed(seed)
        try:
            curve = adaptation_curve(
                self.model, env, [task], config, torch.Generator().manual_seed(seed)
            )
        except ValueError as e:  # a malformed task
            raise ConfigError(f"task {task!r}: {e}") from None
        params = [{name: p[0] for name, p in stage.items()} for stage in curve.params]
        return PolicyAdaptation(params, [float(r) for r in curve.returns[:, 0]])

    def _instead(self) -> str:
        """What this run offers instead, as the end of a one-line error."""
        from metarl.rl.config import RLConfig

        if isinstance(self.config, RLConfig):
            return "this is a meta-RL run: use adapt_policy()"
        if self.algorithm is None:
            return "this is ordinary training, nothing adapts: use predict()"
        return "this is a supervised run: use adapt()"


def _check_shape(method: str, name: str, tensor: Tensor, shape: tuple[int, ...]) -> None:
    """One line naming a tensor the model does not take (a forgotten feature dimension,
    ``(K,)`` for ``(K, 1)``, is the usual mistake)."""
    if tuple(tensor.shape[1:]) != shape or tensor.ndim != len(shape) + 1:
        wanted = ", ".join(["B", *map(str, shape)]) + ("," if not shape else "")
        raise ConfigError(
            f"{method}(): {name} has shape {tuple(tensor.shape)}; the model takes ({wanted}): "
            "a batch dimension, then one example's shape"
        )


def _why_no_best(config: Any, meta_rl: bool) -> str:
    """Why a run's checkpoint holds no best model, as the end of a one-line error."""
    old = "it was trained before best models were kept"
    if meta_rl:
        return old
    if not getattr(config, "validates", False):  # sinusoid, standard-*, val_every 0, no classes
        return "its training never validates, so there is no best-validated model; use last"
    return f"it did not validate yet, or {old}"


def load_run(run_dir: str | Path, which: Literal["best", "last"] | None = None) -> LoadedRun:
    """A trained run's model and config, on the CPU in eval mode.

    Args:
        run_dir: the run directory.
        which: ``best`` (meta-RL: the best model of training; few-shot: the best-validated)
            or ``last``; by default the one ``metarl evaluate`` tests (the config's
            ``eval_model``: meta-RL the best, few-shot the last; others the last), which,
            like ``metarl evaluate``, is the last model when the run kept no best one
            (``run.which`` says which was loaded).

    Example::

        >>> import metarl, torch
        >>> _ = metarl.train("sinusoid", {"iterations": 20}, out="runs/s20", progress=False)
        >>> run = metarl.load_run("runs/s20")
        >>> run.which, run.iteration, type(run.model).__name__
        ('last', 20, 'MLP')
        >>> run.model(torch.linspace(-5, 5, 100).unsqueeze(-1)).shape   # θ's predictions
        torch.Size([100, 1])

    Raises:
        RunError: no run there, or an unreadable one.
        ConfigError: ``which`` neither ``best`` nor ``last``; or ``which="best"`` asked for
            explicitly, for a run that keeps no best model (a supervised run that never
            validates or did not validate yet, or any run trained before best models were
            kept).
    """
    if which is not None and which not in ("best", "last"):
        raise ConfigError(f"which={which!r}: give 'best' or 'last' (or None, what evaluate tests)")
    state = load_checkpoint(run_dir)
    # loaded on the CPU
    experiment, config = stored_config(state, {"device": "cpu"}, Path(run_dir) / CHECKPOINT)
    from metarl.rl.config import RLConfig

    meta_rl = isinstance(config, RLConfig)
    wanted = which or getattr(config, "eval_model", "last")
    if which == "best" and state.get("best") is None:  # the default falls back, as evaluate
        raise ConfigError(f"{run_dir} keeps no best model ({_why_no_best(config, meta_rl)})")
    if meta_rl:
        from metarl.rl.evaluate import choose_model

        model, chosen = choose_model(replace(config, eval_model=wanted), state)
        return LoadedRun(model, config, chosen.iteration, Path(run_dir), chosen.choice, None,
                         state)  # fmt: skip
    if not hasattr(config, "inner_lr"):  # ordinary training (standard-*): nothing adapts
        model = experiment.build_model(config)
        load_weights(model, state["model"], Path(run_dir) / CHECKPOINT)
        return LoadedRun(model.eval(), config, state["iteration"], Path(run_dir), "last", None,
                         state)  # fmt: skip
    from metarl.supervised.checkpoint import restore, tested_state

    chosen_state, chosen = tested_state(state, wanted)
    model, algorithm = restore(config, chosen_state, experiment.build_model(config))
    return LoadedRun(model, config, chosen.iteration, Path(run_dir), chosen.choice, algorithm,
                     state)  # fmt: skip
