"""Tests for hsd3_learn.render: frame conversion, text overlays, MP4 files, the background queue, headless GL."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import imageio.v2 as iio
import numpy as np
import pytest

from hsd3_learn import render
from hsd3_learn.render import (
    RenderQueue,
    ensure_headless_gl,
    overlay_text,
    read_video,
    to_uint8_rgb,
    write_video,
)


def smooth_frames(count: int, height: int, width: int) -> list[np.ndarray]:
    """Horizontal gradients that get brighter frame by frame: H.264 keeps them within a few gray levels."""
    gradient = np.linspace(0, 60, width)[None, :, None]
    return [np.broadcast_to(40 + 30 * i + gradient, (height, width, 3)).astype(np.uint8) for i in range(count)]


def changed_region(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Mask of changed pixels ``[H, W]`` and the slices of its bounding box."""
    changed = (before != after).any(axis=2)
    rows, cols = np.nonzero(changed)
    return changed, (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))


def fps_of(path: Path) -> float:
    with iio.get_reader(path, format="FFMPEG") as reader:
        return reader.get_meta_data()["fps"]


# --------------------------------------------------------------------------------------------------------------
# to_uint8_rgb


def test_to_uint8_rgb_converts_float_and_grayscale() -> None:
    rgb = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    assert to_uint8_rgb(rgb) is rgb
    floats = np.array([[0.0, 0.5], [1.0, 0.25]])
    gray = to_uint8_rgb(floats)
    assert gray.shape == (2, 2, 3) and gray.dtype == np.uint8
    np.testing.assert_array_equal(gray[..., 0], [[0, 128], [255, 64]])
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    np.testing.assert_array_equal(to_uint8_rgb(np.full((2, 2), 7, np.uint8)), np.full((2, 2, 3), 7))


@pytest.mark.parametrize("shape", [(4, 4, 4), (4, 4, 1), (4, 4, 3, 1), (12,), (0, 4, 3)])
def test_to_uint8_rgb_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"frames\[2\] must be HxWx3"):
        to_uint8_rgb(np.zeros(shape, np.uint8), name="frames[2]")


def test_to_uint8_rgb_rejects_bad_dtypes_and_ranges() -> None:
    with pytest.raises(TypeError, match="uint8 or float"):
        to_uint8_rgb(np.zeros((4, 4, 3), np.int64))
    with pytest.raises(TypeError, match="uint8 or float"):
        to_uint8_rgb(np.zeros((4, 4, 3), bool))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_uint8_rgb(np.full((4, 4, 3), 2.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_uint8_rgb(np.full((4, 4, 3), np.nan))


# --------------------------------------------------------------------------------------------------------------
# overlay_text


@pytest.mark.parametrize("corner", ["top-left", "top-right", "bottom-left", "bottom-right"])
def test_overlay_changes_only_a_box_in_the_corner(corner: str) -> None:
    frame = np.full((64, 160, 3), 200, np.uint8)
    original = frame.copy()
    out = overlay_text(frame, ["t=12  r=0.53", "subset=rootz,lfoot"], corner=corner)  # type: ignore[arg-type]
    np.testing.assert_array_equal(frame, original)  # input untouched
    assert out.shape == frame.shape and out.dtype == np.uint8 and out is not frame
    _, (rows, cols) = changed_region(frame, out)  # nothing outside this bounding box changed
    assert 0 < rows.stop - rows.start < 64 and 0 < cols.stop - cols.start < 160
    assert (rows.start == 0) == corner.startswith("top") and (rows.stop == 64) == corner.startswith("bottom")
    assert (cols.start == 0) == corner.endswith("left") and (cols.stop == 160) == corner.endswith("right")
    box = out[rows, cols]
    border = np.concatenate([box[0], box[-1], box[:, 0], box[:, -1]])
    assert (border == 80).all(), "a full box, 200 darkened by the default box_opacity 0.6, frames the text"
    assert (box.min(axis=2) > 230).any(), "white (anti-aliased) text is drawn inside the box"


def test_overlay_lines_and_newlines_agree_and_blank_text_is_a_copy() -> None:
    frame = np.random.default_rng(0).integers(0, 256, (40, 120, 3), dtype=np.uint8)
    np.testing.assert_array_equal(overlay_text(frame, ["a=1", "b=2"]), overlay_text(frame, "a=1\nb=2"))
    blank = overlay_text(frame, [])
    np.testing.assert_array_equal(blank, frame)
    assert blank is not frame


def test_overlay_options_and_tiny_frames() -> None:
    frame = np.full((32, 96, 3), 100, np.uint8)
    out = overlay_text(frame, "r=1", text_color=(0, 255, 0), box_opacity=0.0)
    changed, _ = changed_region(frame, out)
    assert changed.any() and (out[changed][:, 0] <= 100).all(), "only green text, no box, with opacity 0"
    tiny = overlay_text(np.zeros((6, 6), np.float32), "a long line that cannot fit", corner="bottom-right")
    assert tiny.shape == (6, 6, 3) and tiny.dtype == np.uint8


def test_overlay_rejects_bad_arguments() -> None:
    frame = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="corner must be one of"):
        overlay_text(frame, "x", corner="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="box_opacity"):
        overlay_text(frame, "x", box_opacity=1.5)
    with pytest.raises(TypeError, match="lines must be a str"):
        overlay_text(frame, [1, 2])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="HxWx3"):
        overlay_text(np.zeros((16, 16, 4), np.uint8), "x")


# --------------------------------------------------------------------------------------------------------------
# write_video / read_video


@pytest.mark.parametrize(("height", "width"), [(32, 48), (24, 40), (33, 47)])
def test_write_video_round_trip(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, height: int, width: int
) -> None:
    frames = smooth_frames(5, height, width)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = write_video(tmp_path / "episode.mp4", frames, fps=12)
    assert path == tmp_path / "episode.mp4"
    assert capfd.readouterr().err == "", "ffmpeg must stay quiet"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "e.g. imageio's resize warning"
    video = read_video(path)
    # Odd sizes gain one row/column (H.264 yuv420p needs even sizes).
    assert video.shape == (5, height + height % 2, width + width % 2, 3) and video.dtype == np.uint8
    assert fps_of(path) == pytest.approx(12)
    error = np.abs(video[:, :height, :width].astype(int) - np.stack(frames).astype(int))
    assert error.mean() < 3, f"decoded frames differ from the input by {error.mean():.1f} gray levels"
    assert np.all(np.diff(video.mean(axis=(1, 2, 3))) > 20), "frames keep their order"


def test_write_video_converts_float_and_grayscale(tmp_path: Path) -> None:
    gray = [np.full((16, 16), 0.5, np.float32), np.full((16, 16), 0.25, np.float64)]
    video = read_video(write_video(tmp_path / "gray.mp4", gray, fps=10))
    assert video.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(video.mean(axis=(1, 2, 3)), [128, 64], atol=3)


def test_write_video_draws_texts(tmp_path: Path) -> None:
    frames = smooth_frames(2, 48, 96)
    plain = read_video(write_video(tmp_path / "plain.mp4", frames))
    texted = read_video(write_video(tmp_path / "texted.mp4", frames, texts=["t=0", ["t=1", "r=0.5"]]))
    difference = np.abs(plain.astype(int) - texted.astype(int)).max(axis=(0, 3))
    assert difference[:12, :20].max() > 50, "text box in the top-left corner"
    assert difference[-12:, -20:].max() < 10, "the rest of the frame is unchanged"


def test_write_video_creates_parent_folders_and_replaces_old_files(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "eval" / "step_100.mp4"
    write_video(path, smooth_frames(2, 16, 16))
    write_video(path, smooth_frames(3, 16, 16))
    assert len(read_video(path)) == 3
    assert [p.name for p in path.parent.iterdir()] == ["step_100.mp4"], "no temp files left"


def frames_then_crash(count: int):
    yield from smooth_frames(count, 16, 16)
    raise KeyError("simulator crashed")


def test_write_video_is_atomic(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="simulator crashed"):
        write_video(tmp_path / "new.mp4", frames_then_crash(3))
    assert list(tmp_path.iterdir()) == [], "no partial video and no temp file"
    old = write_video(tmp_path / "old.mp4", smooth_frames(4, 16, 16))
    old_bytes = old.read_bytes()
    with pytest.raises(KeyError):
        write_video(old, frames_then_crash(2))
    assert old.read_bytes() == old_bytes, "a failed rewrite keeps the previous video"
    assert [p.name for p in tmp_path.iterdir()] == ["old.mp4"]


BLACK = np.zeros((16, 16, 3), np.uint8)


@pytest.mark.parametrize(
    ("frames", "kwargs", "error", "message"),
    [
        ([], {}, ValueError, "no frames"),
        ([BLACK, np.zeros((16, 18, 3), np.uint8)], {}, ValueError, r"frames\[1\] has shape"),
        ([BLACK, np.zeros((16, 16, 4), np.uint8)], {}, ValueError, r"frames\[1\] must be"),
        ([np.zeros((16, 16, 3), np.int32)], {}, TypeError, r"frames\[0\] must have dtype"),
        ([BLACK], {"fps": 0}, ValueError, "fps must be positive"),
        ([BLACK, BLACK], {"texts": ["a"]}, ValueError, "texts has 1 entries, fewer than the frames"),
        ([BLACK, BLACK], {"texts": ["a"] * 3}, ValueError, "texts has 3 entries but there are 2 frames"),
    ],
)
def test_write_video_rejects_bad_input(
    tmp_path: Path, frames: list[np.ndarray], kwargs: dict, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        write_video(tmp_path / "bad.mp4", frames, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_write_video_names_the_missing_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # makes `import imageio_ffmpeg` fail
    with pytest.raises(ImportError, match="pip install imageio-ffmpeg"):
        write_video(tmp_path / "x.mp4", smooth_frames(1, 16, 16))


def test_write_video_reports_ffmpeg_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "_pad_to_even", lambda frame: frame)  # libx264 then refuses the odd size
    with pytest.raises(RuntimeError, match="ffmpeg wrote no data"):
        write_video(tmp_path / "odd.mp4", smooth_frames(2, 15, 15))
    assert list(tmp_path.iterdir()) == []


def test_read_video_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no video file"):
        read_video(tmp_path / "missing.mp4")


# --------------------------------------------------------------------------------------------------------------
# RenderQueue


@pytest.mark.parametrize("use_process", [True, False], ids=["process", "thread"])
def test_render_queue_writes_all_videos(tmp_path: Path, use_process: bool) -> None:
    paths = [tmp_path / f"video_{i}.mp4" for i in range(3)]
    with RenderQueue(use_process=use_process) as queue:
        for i, path in enumerate(paths):
            queue.push(path, smooth_frames(i + 1, 16, 24), fps=10, texts=[f"t={t}" for t in range(i + 1)])
        written = queue.close()
    assert written == paths
    assert [len(read_video(path)) for path in paths] == [1, 2, 3]
    assert queue.close() == [], "closing twice is harmless"
    with pytest.raises(RuntimeError, match="closed"):
        queue.push(tmp_path / "late.mp4", smooth_frames(1, 16, 16))


@pytest.mark.parametrize("use_process", [True, False], ids=["process", "thread"])
def test_render_queue_reports_worker_errors_on_close(tmp_path: Path, use_process: bool) -> None:
    queue = RenderQueue(use_process=use_process)
    queue.push(tmp_path / "bad.mp4", [np.zeros((16, 16, 4), np.uint8)])
    queue.push(tmp_path / "good.mp4", smooth_frames(2, 16, 16))
    with pytest.raises(RuntimeError, match=r"1 video\(s\) failed: .*bad\.mp4: ValueError: frames\[0\] must be"):
        queue.close()
    assert [p.name for p in tmp_path.iterdir()] == ["good.mp4"], "the other videos are still written"


def test_render_queue_copies_frames_on_push(tmp_path: Path) -> None:
    buffer = np.full((16, 16, 3), 30, np.uint8)
    with RenderQueue(use_process=False) as queue:
        queue.push(tmp_path / "dark.mp4", [buffer])
        buffer[:] = 220  # a renderer reusing its buffer for the next episode
    assert read_video(tmp_path / "dark.mp4").mean() == pytest.approx(30, abs=3)


class DeadWorkerPool(Executor):
    """Stands in for a process pool whose worker died, as when a script without a __main__ guard is re-run.

    The first ``accepted`` submits return futures that fail with BrokenProcessPool; later submits raise it,
    like a real pool that already noticed the dead worker.
    """

    def __init__(self, *args: object, accepted: int = 2, **kwargs: object) -> None:
        self.accepted = accepted

    def submit(self, fn, /, *args, **kwargs) -> Future:  # type: ignore[no-untyped-def]
        if self.accepted == 0:
            raise BrokenProcessPool("A child process terminated abruptly, the process pool is not usable anymore")
        self.accepted -= 1
        future: Future = Future()
        future.set_exception(BrokenProcessPool("A process in the process pool was terminated abruptly"))
        return future


GUARD_HINT = r"; with use_process=True.*'spawn'.*`if __name__ == \"__main__\":` or .*RenderQueue\(use_process=False\)$"


def test_render_queue_explains_a_dead_worker_on_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "ProcessPoolExecutor", DeadWorkerPool)
    queue = RenderQueue(use_process=True)
    queue.push(tmp_path / "a.mp4", smooth_frames(1, 16, 16))
    queue.push(tmp_path / "b.mp4", smooth_frames(1, 16, 16))
    message = r"worker process died, so 2 video\(s\) were not written" + GUARD_HINT
    with pytest.raises(RuntimeError, match=message) as raised:
        queue.close()
    assert "\n" not in str(raised.value), "one line"
    assert raised.value.__cause__ is None and not isinstance(raised.value, BrokenProcessPool)


def test_render_queue_explains_a_dead_worker_on_push(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "ProcessPoolExecutor", lambda **kwargs: DeadWorkerPool(accepted=0))
    queue = RenderQueue()
    with pytest.raises(RuntimeError, match=r"worker process died, so .*late\.mp4 cannot be queued" + GUARD_HINT):
        queue.push(tmp_path / "late.mp4", smooth_frames(1, 16, 16))


def test_render_queue_docstring_names_the_main_guard() -> None:
    doc = RenderQueue.__doc__ or ""
    assert 'if __name__ == "__main__":' in doc and "BrokenProcessPool" in doc and "use_process=False" in doc


def test_all_lists_each_public_name_once_sorted() -> None:
    assert render.__all__ == sorted(set(render.__all__))
    public = {"RenderQueue", "ensure_headless_gl", "overlay_text", "read_video", "to_uint8_rgb", "write_video"}
    assert set(render.__all__) == public
    assert all(callable(getattr(render, name)) for name in render.__all__)


# --------------------------------------------------------------------------------------------------------------
# ensure_headless_gl


@pytest.mark.parametrize(
    ("platform", "env", "expected", "mujoco_gl_after"),
    [
        ("linux", {}, "egl", "egl"),
        ("linux", {"DISPLAY": ""}, "egl", "egl"),
        ("linux", {"DISPLAY": ":0"}, "glfw", None),
        ("linux", {"MUJOCO_GL": "osmesa"}, "osmesa", "osmesa"),
        ("linux", {"MUJOCO_GL": "glfw", "DISPLAY": ""}, "glfw", "glfw"),
        ("darwin", {}, "cgl", None),
        ("win32", {}, "glfw", None),
    ],
)
def test_ensure_headless_gl(
    monkeypatch: pytest.MonkeyPatch, platform: str, env: dict, expected: str, mujoco_gl_after: str | None
) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert ensure_headless_gl() == expected
    assert os.environ.get("MUJOCO_GL") == mujoco_gl_after
