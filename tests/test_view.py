"""`metarl view`: rollout videos and figures, rendered headless, checked as files."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from metarl.cli import main

SMALL = [
    "iterations=1", "meta_batch_size=2", "episodes_per_task=2", "horizon=12",
    "hidden_sizes=[16,16]", "eval_tasks=3", "eval_episodes_per_task=2", "tensorboard=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def cheetah_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("view") / "hc"
    assert (
        main(["train", "halfcheetah-vel", "--out", str(run), "--no-progress", "--set", *SMALL]) == 0
    )
    return run


def test_mujoco_video_has_one_frame_per_state_and_the_stages_side_by_side(cheetah_run, capsys):
    code = main(
        ["view", str(cheetah_run), "--tasks", "2", "--steps", "1", "--width", "64",
         "--height", "48", "--gif", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    frames = iio.imread(cheetah_run / "videos" / "task2.mp4")
    # 12 steps -> 13 states; two stages of 64 px; panel 48 + stage and task captions (28 each)
    assert frames.shape == (13, 48 + 2 * 28, 2 * 64, 3)
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1.0  # it moves
    gif = iio.imread(cheetah_run / "videos" / "task2.gif")
    assert gif.shape[0] == 7  # every second frame
    assert "task2.mp4" in capsys.readouterr().out


def test_navigation_writes_a_trajectory_figure_and_an_animation(tmp_path):
    run = tmp_path / "nav"
    assert main(["train", "navigation", "--out", str(run), "--no-progress", "--set", *SMALL]) == 0
    assert main(["view", str(run), "--steps", "2", "--height", "100", "--no-progress"]) == 0
    assert (run / "plots" / "view_trajectories.png").stat().st_size > 1000
    frames = iio.imread(run / "videos" / "task0.mp4")
    assert frames.shape[0] >= 2 and frames.shape[1:] == (200, 200, 3)
    assert not np.array_equal(frames[0], frames[-1])  # the paths grow


def test_view_rejects_bad_input(cheetah_run, capsys):
    assert main(["view", str(cheetah_run), "--tasks", "7", "--no-progress"]) == 2
    assert "not a test task index" in capsys.readouterr().err
    # The stage to replay is refused before any rollout (and before asking for a display).
    for stage in ("-1", "4"):
        args = ["view", str(cheetah_run), "--interactive", "--interactive-stage", stage]
        assert main([*args, "--steps", "3", "--no-progress"]) == 2
        assert f"--interactive-stage {stage}: the stages are 0" in capsys.readouterr().err
    assert main(["view", str(cheetah_run), "--interactive-stage", "0", "--no-progress"]) == 2
    assert "add --interactive" in capsys.readouterr().err


def test_interactive_without_a_display_says_so(cheetah_run, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["view", str(cheetah_run), "--interactive", "--no-progress"]) == 2
    assert "needs a display" in capsys.readouterr().err


def test_a_panel_wider_than_mujocos_offscreen_buffer_renders(cheetah_run, tmp_path):
    out = tmp_path / "wide"
    code = main(["view", str(cheetah_run), "--tasks", "0", "--steps", "0", "--width", "700",
                 "--height", "500", "--out", str(out), "--no-progress"])  # fmt: skip
    assert code == 0  # the model's own buffer is 640 x 480
    assert iio.imread(out / "videos" / "task0.mp4").shape[1:] == (500 + 2 * 28, 700, 3)
