"""Tests of envs.gallery: off-screen frames of tasks, the task gallery and episode videos."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as iio
import numpy as np
import pytest

import envs
from envs.gallery import render_frame, save_episode_video, task_gallery
from hsd3_learn.render import read_video


def assert_real_picture(frame: np.ndarray, height: int, width: int) -> None:
    """uint8 RGB of the requested size, with a scene in it: many distinct colours, not one flat fill."""
    assert frame.dtype == np.uint8 and frame.shape == (height, width, 3)
    assert frame.std() > 10
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 50


def test_render_frame_returns_a_picture_of_the_requested_size() -> None:
    frame = render_frame("PoleBalance", "walker", width=160, height=120)
    assert_real_picture(frame, 120, 160)
    purple = (frame[..., 2] > 150) & (frame[..., 0] > 60) & (frame[..., 1] < 60)
    assert purple.sum() > 5  # the pole is in the picture


def test_render_frame_is_deterministic_and_follows_steps_and_options() -> None:
    first = render_frame("GoalWall", "walker", width=128, height=96)
    assert np.array_equal(first, render_frame("GoalWall", "walker", width=128, height=96))
    assert not np.array_equal(first, render_frame("GoalWall", "walker", width=128, height=96, steps=10))
    assert not np.array_equal(first, render_frame("GoalWall", "walker", width=128, height=96, camera="side"))


def test_shadows_are_off_unless_asked_for() -> None:
    plain = render_frame("Floor", "walker", width=128, height=96)
    shaded = render_frame("Floor", "walker", width=128, height=96, shadows=True)
    assert not np.array_equal(plain, shaded)


def test_render_frame_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="steps"):
        render_frame("Floor", "walker", steps=-1)
    with pytest.raises(ValueError, match="unknown task"):
        render_frame("Football", "walker")


def test_gallery_renders_every_registered_task_for_the_walker() -> None:
    gallery = task_gallery("walker", width=96, height=72)
    assert list(gallery) == list(envs.TASKS)
    for frame in gallery.values():
        assert_real_picture(frame, 72, 96)
    assert not np.array_equal(gallery["Floor"], gallery["GoalWall"])


def test_gallery_of_chosen_tasks_checks_names_first() -> None:
    gallery = task_gallery("humanoid", tasks=["GoalWall"], width=64, height=48)
    assert list(gallery) == ["GoalWall"] and gallery["GoalWall"].shape == (48, 64, 3)
    with pytest.raises(ValueError, match="unknown task"):
        task_gallery("walker", tasks=["Floor", "Football"])


def test_episode_video_of_a_task_is_written_and_reads_back(tmp_path: Path) -> None:
    path = save_episode_video("PoleBalance", "walker", tmp_path / "pole.mp4", steps=5)
    assert path == tmp_path / "pole.mp4"
    video = read_video(path)
    assert video.shape[1:] == (240, 320, 3) and 2 <= len(video) <= 6  # reset frame + up to 5 steps
    assert video.std() > 10
    with iio.get_reader(path, format="FFMPEG") as reader:
        assert reader.get_meta_data()["fps"] == pytest.approx(40)  # real time: the walker's 40 Hz control


def test_episode_video_of_an_env_uses_the_policy_and_leaves_the_env_open(tmp_path: Path) -> None:
    env = envs.make("GoalWall", "walker", render_mode="rgb_array", width=64, height=48)
    seen = []

    def policy(observation: dict[str, np.ndarray]) -> np.ndarray:
        seen.append(observation["ball"].copy())
        return np.zeros(env.action_space.shape, np.float32)

    save_episode_video(env, None, tmp_path / "goal.mp4", steps=3, policy=policy, fps=10)
    assert len(seen) == 3 and len(read_video(tmp_path / "goal.mp4")) == 4
    assert env.render().shape == (48, 64, 3)  # still usable
    env.close()


def test_episode_video_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="render_mode"):
        save_episode_video(envs.make("Floor", "walker"), None, tmp_path / "x.mp4", steps=1)
    with pytest.raises(ValueError, match="robot is needed"):
        save_episode_video("Floor", None, tmp_path / "x.mp4", steps=1)
    with pytest.raises(ValueError, match="does not match"):
        save_episode_video(envs.make("Floor", "walker", render_mode="rgb_array"), "humanoid", tmp_path / "x.mp4", 1)
    with pytest.raises(TypeError, match="gymnasium Env"):
        save_episode_video(42, "walker", tmp_path / "x.mp4", steps=1)
    with pytest.raises(ValueError, match="steps"):
        save_episode_video("Floor", "walker", tmp_path / "x.mp4", steps=-2)
    assert not list(tmp_path.iterdir())
