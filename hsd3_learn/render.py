"""Episode videos for HSD-3 / SPiRL evaluation runs and the course notebooks, written headless as MP4 files.

Watching the walker is the quickest way to tell a working skill policy from one that games the reward, so
evaluation renders episodes and saves them as videos. What lives here, in the order the course teaches it:

- ``to_uint8_rgb``: the frame format every other function expects (HxWx3 uint8), from float or grayscale input.
- ``overlay_text``: stamp lines such as ``"t=12  r=0.53  subset=rootz,lfoot"`` into a corner of a frame.
- ``write_video`` / ``read_video``: H.264 MP4 through imageio's ffmpeg backend, written atomically.
- ``RenderQueue``: encode videos in a background worker so that training does not wait for ffmpeg.
- ``ensure_headless_gl``: make MuJoCo render without a window system (servers, CI, containers).

Differences from the original ``hucc.render``:

1. Videos go to MP4 files instead of visdom: visdom is unmaintained, and files work in notebooks, CI and W&B.
2. Text is drawn with Pillow on a background box instead of a matplotlib figure per frame: far faster, no
   global pyplot state, and readable on any background.
3. ``push`` takes a whole video (frames, fps, texts) instead of per-frame pushes plus a ``save`` message: a
   video is the unit that can fail, so failures are reported per path.
4. Worker failures are raised by ``close()`` instead of only being logged: lost videos used to go unnoticed.
5. The worker is started with the ``spawn`` method instead of ``torch.multiprocessing``'s default ``fork``:
   forking a process that holds CUDA, MuJoCo GL contexts or threads can deadlock.
6. Files are written to a temp file and renamed, so a crash never leaves a truncated video behind.
7. Frames keep their size instead of being resized by imageio to a multiple of 16 (which warned and blurred);
   odd sizes gain one edge pixel, because H.264 in the widely playable yuv420p format needs even sizes.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import sys
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from types import TracebackType
from typing import Literal

import imageio.v2 as iio
import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["RenderQueue", "ensure_headless_gl", "overlay_text", "read_video", "to_uint8_rgb", "write_video"]

Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right"]
_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
_BOX_PADDING = 3  # pixels between the text and the edge of its background box


# --------------------------------------------------------------------------------------------------------------
# Frames


def to_uint8_rgb(frame: np.ndarray, name: str = "frame") -> np.ndarray:
    """Bring a frame into the one format the video code handles: ``[H, W, 3]`` uint8.

    Renderers and plots hand out uint8 RGB, floats in [0, 1] or single-channel images; converting them here
    keeps every other function simple. Already-valid frames are returned as they are (no copy).

    Args:
        frame: ``[H, W, 3]`` or grayscale ``[H, W]``, dtype uint8 or float with values in [0, 1].
        name: how error messages refer to the frame (e.g. ``"frames[7]"``).
    """
    array = np.asarray(frame)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3 or array.size == 0:
        raise ValueError(f"{name} must be HxWx3 (RGB) or HxW (grayscale) and non-empty, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{name} must have dtype uint8 or float (values in [0, 1]), got {array.dtype}")
    if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        raise ValueError(
            f"{name} is float, so its values must lie in [0, 1]; got range [{array.min()}, {array.max()}]"
        )
    return (array * 255.0).round().astype(np.uint8)


@functools.cache
def _default_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font: needs no font files, so it works the same on every machine."""
    return ImageFont.load_default()


def _as_text(lines: str | Sequence[str]) -> str:
    """One string or a list of lines -> one newline-separated string."""
    if isinstance(lines, str):
        return lines
    if isinstance(lines, Sequence) and all(isinstance(line, str) for line in lines):
        return "\n".join(lines)
    raise TypeError(f"lines must be a str or a sequence of str, got {lines!r}")


def _text_bbox(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of the ink of ``text`` drawn at (0, 0); left/top may be nonzero."""
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left, top, right, bottom = scratch.multiline_textbbox((0, 0), text, font=font)
    return int(left), int(top), int(right), int(bottom)


def _box_origin(corner: Corner, frame_hw: tuple[int, int], box_hw: tuple[int, int]) -> tuple[int, int]:
    """Top-left pixel ``(y, x)`` of a box of size ``box_hw`` placed in ``corner``; clipped to the frame."""
    (height, width), (box_h, box_w) = frame_hw, box_hw
    y = 0 if corner.startswith("top") else max(height - box_h, 0)
    x = 0 if corner.endswith("left") else max(width - box_w, 0)
    return y, x


def overlay_text(
    frame: np.ndarray,
    lines: str | Sequence[str],
    corner: Corner = "top-left",
    text_color: tuple[int, int, int] = (255, 255, 255),
    box_opacity: float = 0.6,
) -> np.ndarray:
    """Draw lines of text in a corner of ``frame`` on a darkened box, so they stay readable over the scene.

    Used to stamp each video frame with the step, reward or the active feature subset of HSD-3's high-level
    policy. Only pixels inside the box change; text that does not fit is clipped at the frame border.

    Args:
        frame: ``[H, W, 3]`` uint8 (anything ``to_uint8_rgb`` accepts); left untouched.
        lines: one string (may contain newlines) or a sequence of lines.
        corner: where the box goes: ``"top-left"``, ``"top-right"``, ``"bottom-left"`` or ``"bottom-right"``.
        text_color: RGB color of the text.
        box_opacity: how strongly the box darkens the scene behind the text; 0 = no box, 1 = solid black.

    Returns:
        A new ``[H, W, 3]`` uint8 array.
    """
    if corner not in _CORNERS:
        raise ValueError(f"corner must be one of {_CORNERS}, got {corner!r}")
    if not 0.0 <= box_opacity <= 1.0:
        raise ValueError(f"box_opacity must lie in [0, 1], got {box_opacity}")
    text = _as_text(lines)
    out = to_uint8_rgb(frame).copy()
    if not text.strip():
        return out
    font = _default_font()
    left, top, right, bottom = _text_bbox(text, font)
    box_h, box_w = bottom - top + 2 * _BOX_PADDING, right - left + 2 * _BOX_PADDING
    y, x = _box_origin(corner, out.shape[:2], (box_h, box_w))
    box = out[y : y + box_h, x : x + box_w]
    box[:] = (box * (1.0 - box_opacity)).round().astype(np.uint8)
    image = Image.fromarray(out)
    text_origin = (x + _BOX_PADDING - left, y + _BOX_PADDING - top)
    ImageDraw.Draw(image).multiline_text(text_origin, text, fill=text_color, font=font)
    return np.array(image)


def _pad_to_even(frame: np.ndarray) -> np.ndarray:
    """Repeat the last row/column when H or W is odd: libx264 refuses odd sizes for yuv420p video."""
    height, width = frame.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return frame
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


# --------------------------------------------------------------------------------------------------------------
# Video files


# libx264 with yuv420p plays everywhere (browsers, notebooks, slides). macro_block_size=1 stops imageio from
# resizing (and warning about) sizes not divisible by 16; log level "error" keeps ffmpeg's warnings off stderr.
_FFMPEG_OPTIONS = {
    "format": "FFMPEG",
    "mode": "I",
    "codec": "libx264",
    "pixelformat": "yuv420p",
    "macro_block_size": 1,
    "ffmpeg_log_level": "error",
}


def _require_ffmpeg() -> None:
    """Fail early, with the fix, when imageio has no ffmpeg backend to encode MP4 with."""
    try:
        import imageio_ffmpeg  # noqa: F401  (imported only to check that it is installed)
    except ImportError:
        message = "writing MP4 videos needs imageio's ffmpeg backend: pip install imageio-ffmpeg"
        raise ImportError(message) from None


def _encode(
    target: Path, frames: Iterable[np.ndarray], fps: float, texts: Sequence[str | Sequence[str]] | None
) -> int:
    """Stream ``frames`` (with their ``texts``) into an H.264 file at ``target``; returns the frame count."""
    writer = iio.get_writer(target, fps=fps, **_FFMPEG_OPTIONS)
    first_shape = None
    count = 0
    with contextlib.closing(writer):  # imageio's own `with` leaves ffmpeg running when an error occurs
        for index, frame in enumerate(frames):
            rgb = to_uint8_rgb(frame, name=f"frames[{index}]")
            first_shape = first_shape or rgb.shape
            if rgb.shape != first_shape:
                raise ValueError(f"frames[{index}] has shape {rgb.shape}, but frames[0] has {first_shape}")
            if texts is not None:
                if index >= len(texts):
                    raise ValueError(f"texts has {len(texts)} entries, fewer than the frames; give one per frame")
                rgb = overlay_text(rgb, texts[index])
            writer.append_data(_pad_to_even(rgb))
            count += 1
    return count


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float = 30,
    texts: Sequence[str | Sequence[str]] | None = None,
) -> Path:
    """Encode ``frames`` as an H.264 MP4 at ``path``, atomically: the file appears complete or not at all.

    Frames are streamed to ffmpeg one at a time, so a generator over a long episode needs no extra memory.
    Odd heights/widths gain one repeated edge row/column (see the module docstring).

    Args:
        path: target ``.mp4`` file; missing parent folders are created, an existing file is replaced.
        frames: ``[H, W, 3]`` uint8 frames, all one size (float in [0, 1] and grayscale ``[H, W]`` are converted).
        fps: frames per second of the video.
        texts: optional overlay per frame (a string or lines, drawn by ``overlay_text``); one per frame.

    Returns:
        ``path`` as a ``Path``.
    """
    _require_ffmpeg()
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temp file ends in .mp4 so that ffmpeg picks the MP4 container; the leading dot hides it.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp.mp4")
    try:
        count = _encode(tmp, frames, fps, texts)
        if count == 0:
            raise ValueError(f"no frames to write to {path}; frames must contain at least one frame")
        if texts is not None and len(texts) != count:
            raise ValueError(f"texts has {len(texts)} entries but there are {count} frames; give one per frame")
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise RuntimeError(f"ffmpeg wrote no data for {path}; see its error messages above")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames of a video as one ``[T, H, W, 3]`` uint8 array (for tests and notebooks; loads everything)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video file at {path}")
    return np.stack(iio.mimread(path, format="FFMPEG", memtest=False))


# --------------------------------------------------------------------------------------------------------------
# Background encoding


class RenderQueue:
    """Encode videos in a background worker, so that training continues while ffmpeg runs.

    ``push`` hands over one finished episode; ``close`` waits for all of them and raises if any failed::

        with RenderQueue() as queue:
            queue.push("videos/step_1000.mp4", frames, fps=30, texts=captions)

    One worker encodes the videos in order (ffmpeg itself uses several cores). By default it is a separate
    process started with ``spawn``, which is safe even when the trainer holds CUDA, MuJoCo or threads;
    ``use_process=False`` uses a thread instead, which starts instantly and needs no pickling.

    ``spawn`` starts the worker by importing the script that created the queue again. A script whose
    top-level code is not under ``if __name__ == "__main__":`` therefore runs again inside the worker,
    which then dies, and the pool is broken (``BrokenProcessPool``); ``push`` and ``close`` report that
    with the two fixes: add the guard, or use ``use_process=False``. Notebooks and code called from a
    guarded ``main()`` are fine.
    """

    def __init__(self, use_process: bool = True) -> None:
        self._executor: Executor
        if use_process:
            self._executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        else:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="RenderQueue")
        self._pending: list[tuple[Path, Future[Path]]] = []
        self._closed = False

    def push(
        self,
        path: str | os.PathLike,
        frames: Iterable[np.ndarray],
        fps: float = 30,
        texts: Sequence[str | Sequence[str]] | None = None,
    ) -> None:
        """Queue one video (arguments as in ``write_video``); returns at once.

        The frames are copied first, so the caller may reuse or overwrite its buffers right away. Errors in
        the frames are only found by the worker and reported by ``close()``.
        """
        if self._closed:
            raise RuntimeError("this RenderQueue is closed; create a new one to write more videos")
        frame_copies = [np.array(frame) for frame in frames]
        text_copies = None if texts is None else list(texts)
        try:
            future = self._executor.submit(write_video, path, frame_copies, fps, text_copies)
        except BrokenProcessPool:
            raise RuntimeError(_broken_pool_message(f"{path} cannot be queued")) from None
        self._pending.append((Path(path), future))

    def close(self) -> list[Path]:
        """Wait for every queued video and stop the worker; calling it again does nothing.

        Returns:
            The videos written since the queue was created, in push order.

        Raises:
            RuntimeError: when the worker process died (see the class docstring), or naming every video
                that failed and why (the others are still written).
        """
        if self._closed:
            return []
        self._closed = True
        self._executor.shutdown(wait=True)
        written, failures, lost = [], [], 0
        for path, future in self._pending:
            error = future.exception()
            if error is None:
                written.append(path)
            elif isinstance(error, BrokenProcessPool):
                lost += 1
            else:
                failures.append(f"{path}: {type(error).__name__}: {error}")
        self._pending.clear()
        if lost:
            raise RuntimeError(_broken_pool_message(f"{lost} video(s) were not written"))
        if failures:
            raise RuntimeError(f"{len(failures)} video(s) failed: " + "; ".join(failures))
        return written

    def __enter__(self) -> RenderQueue:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _broken_pool_message(consequence: str) -> str:
    """The one-line explanation of a dead worker process, with both ways to fix it."""
    return (
        f"the RenderQueue worker process died, so {consequence}; with use_process=True it is "
        "started with 'spawn', which re-runs the calling script's top-level code: put that code under "
        "`if __name__ == \"__main__\":` or create the queue with RenderQueue(use_process=False)"
    )


# --------------------------------------------------------------------------------------------------------------
# Headless OpenGL


def ensure_headless_gl() -> str:
    """Make MuJoCo render off-screen when there is no display; call it before ``import mujoco``.

    MuJoCo's default OpenGL backend, GLFW, needs a window system (an X server named by ``$DISPLAY``). Training
    servers, CI runners and containers have none, so ``env.render()`` would fail there. EGL creates an
    off-screen context without a display server: on the GPU when a driver provides one, otherwise in software
    through Mesa. MuJoCo reads ``MUJOCO_GL`` once, when it is imported, hence the call order. An explicit
    ``MUJOCO_GL`` always wins; EGL is only chosen on Linux (macOS and Windows always have a window system).

    Returns:
        The backend MuJoCo will use: ``MUJOCO_GL`` if set, else ``"egl"`` (just set), ``"glfw"`` or ``"cgl"``.
    """
    chosen = os.environ.get("MUJOCO_GL")
    if chosen:
        return chosen
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"
        return "egl"
    return "cgl" if sys.platform == "darwin" else "glfw"
