"""Video decoding with PyAV: probe a file, decode a sparse set of frames with keyframe seeks, load a clip.

Sparse sampling (12 frames of a 60 s clip) must not decode the whole clip: each target is reached by
seeking to the keyframe before it and decoding forward (spec/ecosystem.md §5 measured ~10x over
decode-everything on a 60 s clip with a 1 s GOP). Frame indices are derived from timestamps
(``pts``, the stream's ``time_base`` and ``average_rate``, relative to the stream's ``start_time``), so a
frame has the same index whichever way it was reached.

Every failure to read a file surfaces as :class:`~vidbench.errors.VideoDecodeError` naming the file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from vidbench.data.sampling import check_sampling_args, frame_mask, sample_frame_indices
from vidbench.data.transforms import resize_center_crop
from vidbench.errors import VideoDecodeError

# Threads per decoder. Clips are decoded in parallel by DataLoader / frame-cache workers, so one decoder
# should not claim every core; and frame threading delays each decoder's output by one frame per extra
# thread, which after every keyframe seek costs more than it saves (measured on a 224x224 mpeg4 clip: 12
# sparse frames took 15.9 ms with 1 thread, 17.8 ms with 2, 59 ms with FFmpeg's automatic count).
DECODER_THREADS = 1

_AV_ERRORS = (av.FFmpegError, OSError, EOFError)


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learned about a file's first video stream.

    ``num_frames`` is the container's frame count when it has one; otherwise (Matroska/WebM report 0)
    it is the index of the last frame timestamp found by reading the packets at the end of the file, plus
    one, falling back to ``floor(duration * fps)``. ``duration_s`` is the stream duration, else the
    container duration, else ``num_frames / fps``.
    """

    num_frames: int
    fps: float
    duration_s: float
    width: int
    height: int


def probe_video(path: str | Path) -> VideoInfo:
    """Read the header of ``path`` and decode its first frame to prove the file is decodable."""
    with _Reader(path) as reader:
        return reader.info


def decode_frames(path: str | Path, indices: Sequence[int]) -> np.ndarray:
    """uint8 ``[len(indices), H, W, 3]`` RGB frames at ``indices``, in the requested order.

    Indices may repeat and need not be sorted. An index past the real end of the stream is an error
    (the sampler never asks for one), not a silently repeated last frame.
    """
    with _Reader(path, probe=False) as reader:
        return reader.frames(indices)


def decode_all_frames(path: str | Path) -> np.ndarray:
    """Decode every frame in stream order: the slow reference the seek path is tested and timed against."""
    with _Reader(path, probe=False) as reader:
        return reader.all_frames()


def load_clip(
    path: str | Path,
    *,
    max_frames: int,
    size: int,
    framerate: float = 1.0,
    slice_framepos: int = 2,
    start_s: float | None = None,
    end_s: float | None = None,
    fps_mode: str = "int",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probe, sample, decode and CLIP-resize one clip: what a dataset calls per video.

    Returns uint8 ``[max_frames, 3, size, size]`` (frames past the sampled ones are zero) and a long mask
    ``[max_frames]`` (1 = real frame). Normalisation is left to
    :func:`~vidbench.data.transforms.normalize_video` on the model's device. Sampling rules:
    :func:`~vidbench.data.sampling.sample_frame_indices`. Bad settings raise ``ValueError`` before the file
    is opened; a window that does not fit this clip raises :class:`~vidbench.errors.VideoDecodeError`.
    """
    check_sampling_args(max_frames, framerate, slice_framepos, fps_mode)
    if size < 1:
        raise ValueError(f"size={size} must be >= 1")
    with _Reader(path) as reader:
        info = reader.info
        try:
            indices = sample_frame_indices(
                info.num_frames,
                info.fps,
                max_frames,
                framerate=framerate,
                slice_framepos=slice_framepos,
                start_s=start_s,
                end_s=end_s,
                fps_mode=fps_mode,
            )
        except ValueError as err:
            raise VideoDecodeError(path, f"cannot sample frames ({info}): {err}") from err
        frames = reader.frames(indices)
    video = torch.zeros((max_frames, 3, size, size), dtype=torch.uint8)
    video[: len(indices)] = resize_center_crop(torch.from_numpy(frames), size)
    return video, frame_mask(len(indices), max_frames)


class _Reader:
    """One open container and the decoding position in its video stream.

    Keeping the position lets consecutive targets close together be reached by decoding forward rather than
    seeking again, and lets :func:`load_clip` reuse the frame the probe already decoded.
    """

    def __init__(self, path: str | Path, probe: bool = True) -> None:
        self.path = Path(path)
        _check_file(self.path)
        try:
            self._container = av.open(str(self.path))
        except _AV_ERRORS as err:
            reason = f"cannot open as a video container, truncated or not a video ({_describe(err)})"
            raise VideoDecodeError(self.path, reason) from err
        try:
            if not self._container.streams.video:
                raise VideoDecodeError(self.path, "the file has no video stream")
            self._stream = self._container.streams.video[0]
            self._stream.codec_context.thread_type = "AUTO"
            self._stream.codec_context.thread_count = DECODER_THREADS
            self._rate = _frame_rate(self._stream, self.path)
            self._start = self._stream.start_time if self._stream.start_time is not None else 0
            self._frames_it: Iterator[av.VideoFrame] | None = None
            # What is known of the keyframe interval, to choose between seeking and decoding on:
            self._gap_min: int | None = None  # smallest gap between consecutive keyframes decoded
            self._gap_lb = 1  # lower bound from seeks: landing on k for target t means no keyframe in (k, t]
            self._reset_position()
            self.info = self._probe() if probe else None
        except BaseException:
            self._container.close()
            raise

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._container.close()

    # -- public operations -------------------------------------------------------------------------------

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        wanted = [int(i) for i in indices]
        if not wanted:
            raise ValueError("decode_frames needs at least one index")
        if min(wanted) < 0:
            raise ValueError(f"frame indices must be >= 0, got {min(wanted)}")
        decoded: dict[int, np.ndarray] = {}
        try:
            for target in sorted(set(wanted)):
                decoded[target] = self._frame_at(target)
        except _AV_ERRORS as err:
            raise VideoDecodeError(self.path, f"decoding failed ({_describe(err)})") from err
        return np.stack([decoded[i] for i in wanted])

    def all_frames(self) -> np.ndarray:
        try:
            frames = [f.to_ndarray(format="rgb24") for f in self._container.decode(self._stream)]
        except _AV_ERRORS as err:
            raise VideoDecodeError(self.path, f"decoding failed ({_describe(err)})") from err
        if not frames:
            raise VideoDecodeError(self.path, "the video stream holds no decodable frame")
        return np.stack(frames)

    # -- probing -----------------------------------------------------------------------------------------

    def _probe(self) -> VideoInfo:
        try:
            first = next(self._decoded(), None)
        except _AV_ERRORS as err:
            raise VideoDecodeError(self.path, f"the first frame does not decode ({_describe(err)})") from err
        if first is None:
            raise VideoDecodeError(self.path, "the video stream holds no decodable frame")
        fps = float(self._rate)
        stream, tb = self._stream, self._stream.time_base
        duration: float | None = None
        if stream.duration and tb is not None:
            duration = float(stream.duration * tb)
        elif self._container.duration:
            duration = self._container.duration / av.time_base
        num_frames = int(stream.frames or 0)
        if num_frames <= 0:
            num_frames = self._count_from_tail(duration)
        if num_frames <= 0:
            raise VideoDecodeError(self.path, "the container gives neither a frame count nor a duration")
        if duration is None or duration <= 0:
            duration = num_frames / fps
        return VideoInfo(num_frames, fps, duration, first.width, first.height)

    def _count_from_tail(self, duration: float | None) -> int:
        """Frame count when the header has none: index of the last packet timestamp + 1.

        Only packets are read (no decoding), starting at the keyframe before the estimated end, so this
        costs one seek. Falls back to ``floor(duration * fps)`` when no timestamp is found.
        """
        estimate = int(duration * float(self._rate) + 1e-6) if duration else 0
        last = -1
        try:
            self._seek(max(estimate - 1, 0))
            for packet in self._container.demux(self._stream):
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is not None and packet.size:
                    last = max(last, self._index_of(ts))
        except _AV_ERRORS:
            last = -1
        self._reset_position()
        return last + 1 if last >= 0 else estimate

    # -- sparse decoding ---------------------------------------------------------------------------------

    def _frame_at(self, target: int) -> np.ndarray:
        """The first frame whose timestamp index reaches ``target`` (equals it for constant-rate video)."""
        if self._last_frame is not None and self._prev < target <= self._cur:
            # Already decoded: the frame served for the previous target also reaches this one (a gap in
            # the timestamps), or it is the frame the probe decoded.
            return self._last_frame.to_ndarray(format="rgb24")
        if not self._forward_is_cheaper(target):
            self._seek(target)
        restarted = False
        while True:
            frame = self._advance_to(target)
            if frame is None:
                raise VideoDecodeError(
                    self.path,
                    f"frame index {target} requested but the stream ends after {self._cur + 1} frames",
                )
            if self._n_since_seek == 1 and self._cur > target and self._sought and not restarted:
                # The seek landed past the target (an imprecise index): decode from the beginning instead.
                self._seek(0)
                restarted = True
                continue
            return frame.to_ndarray(format="rgb24")

    def _advance_to(self, target: int) -> av.VideoFrame | None:
        """Decode forward until a frame's index is >= target; None when the stream ends first."""
        for frame in self._decoded():
            if self._cur >= target:
                return frame
        return None

    def _decoded(self) -> Iterator[av.VideoFrame]:
        """Frames from the current position, keeping index, keyframe and GOP bookkeeping up to date."""
        if self._frames_it is None:
            self._frames_it = self._container.decode(self._stream)
        for frame in self._frames_it:
            ts = frame.pts if frame.pts is not None else frame.dts
            if ts is None:
                raise VideoDecodeError(self.path, "decoded frames carry no timestamps to index them by")
            self._prev, self._cur = self._cur, self._index_of(ts)
            self._last_frame = frame
            self._n_since_seek += 1
            if frame.key_frame:
                if self._last_key is not None and self._cur > self._last_key:
                    gap = self._cur - self._last_key
                    self._gap_min = gap if self._gap_min is None else min(self._gap_min, gap)
                aimed = self._seek_target
                if self._n_since_seek == 1 and aimed is not None and self._cur <= aimed:
                    self._gap_lb = max(self._gap_lb, aimed - self._cur + 1)
                self._last_key = self._cur
            yield frame
        self._frames_it = iter(())

    def _forward_is_cheaper(self, target: int) -> bool:
        """Whether decoding on from the current position beats seeking to the keyframe before ``target``.

        Seeking only helps when a keyframe lies between here and the target. Once two consecutive keyframes
        have been decoded, their smallest gap predicts the next one. Before that, decode on for targets
        within one second, or within the lower bound learned from seek landings (so a long GOP stops
        costing wasted seeks back once one landing has shown its length).
        """
        if self._frames_it is None or self._cur < 0 or target <= self._cur:
            return False
        if self._gap_min is not None and self._last_key is not None:
            return target < self._last_key + self._gap_min
        if target - self._cur <= max(1, round(float(self._rate))):
            return True
        return self._last_key is not None and target < self._last_key + self._gap_lb

    def _seek(self, index: int) -> None:
        """Seek to the keyframe at or before frame ``index`` (half a frame's slack for rounded timestamps)."""
        seconds = (Fraction(index) + Fraction(1, 2)) / self._rate
        offset = self._start + math.floor(seconds / self._stream.time_base)
        self._container.seek(offset, stream=self._stream, backward=True, any_frame=False)
        self._reset_position()
        self._sought = index > 0
        self._seek_target = index

    def _reset_position(self) -> None:
        """Forget the decoding position (after a seek): nothing decoded yet from the new position."""
        self._frames_it = None
        self._cur = -1  # index of the last decoded frame
        self._prev = -1  # index of the frame before it
        self._last_frame: av.VideoFrame | None = None
        self._last_key: int | None = None  # index of the last keyframe decoded since the seek
        self._n_since_seek = 0
        self._sought = False  # whether the position came from a seek to a frame other than the first
        self._seek_target: int | None = None  # the frame that seek aimed at

    def _index_of(self, ts: int) -> int:
        return round((ts - self._start) * self._stream.time_base * self._rate)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoDecodeError(path, "file not found")
    if not path.is_file():
        raise VideoDecodeError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "the file is empty (0 bytes); the download or copy probably failed")


def _frame_rate(stream: av.video.stream.VideoStream, path: Path) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return Fraction(rate)
    raise VideoDecodeError(path, "the video stream declares no frame rate")


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"
