"""PyAV decoding (seek path vs decode-everything), bad files, load_clip, CLIP preprocessing vs PIL."""

from __future__ import annotations

import random
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vidbench.data.video as video_mod
from vidbench.data.sampling import sample_frame_indices
from vidbench.data.transforms import CLIP_MEAN, CLIP_STD, normalize_video, resize_center_crop
from vidbench.data.video import VideoInfo, decode_all_frames, decode_frames, load_clip, probe_video
from vidbench.data.video_writer import write_video
from vidbench.errors import VideoDecodeError

N_FRAMES, FPS = 95, 30


def moving_pattern(n: int, h: int, w: int) -> np.ndarray:
    """Smooth frames that differ from each other (a sliding ramp and a moving block): no scene cuts, so the
    encoder puts keyframes exactly every GOP."""
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i, ..., 0] = (xx * 4 + 2 * i) % 256
        frames[i, ..., 1] = (yy * 4) % 256
        frames[i, ..., 2] = 128
        x0 = (2 * i) % (w - 8)
        frames[i, 8:16, x0 : x0 + 8] = 255
    return frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """Several containers; GOP 45 frames (1.5 s) so targets sit mid-GOP; one h264 file with B-frames."""
    root = tmp_path_factory.mktemp("videos")
    frames = moving_pattern(N_FRAMES, 48, 64)
    out = {ext: write_video(root / f"clip.{ext}", frames, fps=FPS, gop=45) for ext in ("mp4", "avi", "mkv")}
    out["h264"] = write_video(root / "clip_h264.mp4", frames, fps=FPS, gop=40, codec="libx264")
    out["tall"] = write_video(root / "tall.mp4", moving_pattern(40, 64, 48), fps=FPS, gop=20)
    return out


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, videos) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    text = root / "notes.mp4"
    text.write_text("this is not a video, just a text file with the wrong name\n" * 20)
    data = videos["mp4"].read_bytes()
    truncated = root / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    audio = root / "audio_only.mp4"  # a WAV under a video name: a real container with no video stream
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(8000, np.int16).tobytes())
    return {
        "missing": root / "nope.mp4",
        "empty": empty,
        "text": text,
        "truncated": truncated,
        "audio": audio,
    }


@pytest.mark.parametrize("kind", ["mp4", "avi", "mkv", "h264"])
def test_probe_matches_full_decode(videos, kind):
    info = probe_video(videos[kind])
    frames = decode_all_frames(videos[kind])
    assert info == VideoInfo(N_FRAMES, 30.0, pytest.approx(N_FRAMES / FPS, abs=0.05), 64, 48)
    assert frames.shape == (N_FRAMES, 48, 64, 3) and frames.dtype == np.uint8


def test_mkv_header_has_no_frame_count(videos):
    import av

    with av.open(str(videos["mkv"])) as c:
        assert c.streams.video[0].frames == 0  # so probe must find the count another way
    assert probe_video(videos["mkv"]).num_frames == N_FRAMES


@pytest.mark.parametrize("kind", ["mp4", "avi", "mkv", "h264"])
def test_seek_decoding_equals_full_decode(videos, kind):
    everything = decode_all_frames(videos[kind])
    assert not np.array_equal(everything[10], everything[11])  # frames are distinguishable
    rng = random.Random(kind)
    cases = [[0], [N_FRAMES - 1], [44, 45, 46], list(range(0, N_FRAMES, 30)), [90, 3, 3, 50, 0, 90]]
    cases += [[rng.randrange(N_FRAMES) for _ in range(rng.randint(1, 14))] for _ in range(12)]
    for indices in cases:
        got = decode_frames(videos[kind], indices)
        assert got.shape == (len(indices), 48, 64, 3)
        assert np.array_equal(got, everything[indices]), indices


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        ([5, 150, 295], 6 + 1 + 26),  # seek to the keyframes 0, 150 and 270, decode on to each target
        (list(range(0, 300, 60)), 5),  # every target is a keyframe: one frame each
        ([10, 20, 40, 45], 46),  # close targets: decode on from 0 instead of seeking back
    ],
)
def test_sparse_decoding_cost(tmp_path, monkeypatch, targets, expected):
    path = write_video(tmp_path / "long.mp4", moving_pattern(300, 32, 32), fps=FPS, gop=30)
    reference = decode_all_frames(path)
    count = {"frames": 0}
    original = video_mod._Reader._decoded

    def counting(self):
        for frame in original(self):
            count["frames"] += 1
            yield frame

    monkeypatch.setattr(video_mod._Reader, "_decoded", counting)
    got = decode_frames(path, targets)
    assert count["frames"] == expected  # out of 300: never the whole clip
    assert np.array_equal(got, reference[targets])


def test_index_past_the_end_is_an_error(videos):
    with pytest.raises(
        VideoDecodeError, match=rf"frame index {N_FRAMES} requested .* after {N_FRAMES} frames"
    ):
        decode_frames(videos["mp4"], [3, N_FRAMES])
    with pytest.raises(ValueError, match="must be >= 0"):
        decode_frames(videos["mp4"], [-1])


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "file not found"),
        ("empty", "empty"),
        ("text", "cannot open"),
        ("truncated", "cannot open"),
        ("audio", "no video stream"),
    ],
)
def test_bad_files_raise_naming_the_file(bad_files, kind, reason):
    for fn in (probe_video, decode_all_frames, lambda p: decode_frames(p, [0])):
        with pytest.raises(VideoDecodeError, match=reason) as info:
            fn(bad_files[kind])
        assert str(bad_files[kind]) in str(info.value)
        assert info.value.path == bad_files[kind]


def test_load_clip_matches_manual_pipeline(videos):
    path = videos["mp4"]
    clip, mask = load_clip(path, max_frames=12, size=32)
    indices = sample_frame_indices(N_FRAMES, 30.0, 12)
    assert indices == [0, 30, 60, 90]
    expected = resize_center_crop(torch.from_numpy(decode_all_frames(path)[indices]), 32)
    assert clip.shape == (12, 3, 32, 32) and clip.dtype == torch.uint8
    assert mask.tolist() == [1] * 4 + [0] * 8 and mask.dtype == torch.long
    assert torch.equal(clip[:4], expected)
    assert not clip[4:].any()


def test_load_clip_window_and_tall_video(videos):
    clip, mask = load_clip(videos["mkv"], max_frames=3, size=24, start_s=1, end_s=2)
    expected = resize_center_crop(torch.from_numpy(decode_all_frames(videos["mkv"])[[30, 60]]), 24)
    assert mask.tolist() == [1, 1, 0] and torch.equal(clip[:2], expected)
    clip, mask = load_clip(videos["tall"], max_frames=4, size=16)
    assert clip.shape == (4, 3, 16, 16) and mask.tolist() == [1, 1, 0, 0]


def test_load_clip_bad_window_is_a_decode_error_naming_the_file(videos):
    with pytest.raises(VideoDecodeError, match=r"start_s=5 is after end_s=2") as info:
        load_clip(videos["mp4"], max_frames=4, size=16, start_s=5, end_s=2)
    assert str(videos["mp4"]) in str(info.value)


def test_load_clip_bad_settings_are_value_errors(videos):
    with pytest.raises(ValueError, match="max_frames=0"):
        load_clip(videos["mp4"], max_frames=0, size=16)
    with pytest.raises(ValueError, match="fps_mode='float'"):
        load_clip(videos["mp4"], max_frames=4, size=16, fps_mode="float")


def _pil_reference(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    new_h, new_w = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    out = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC))
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return out[top : top + size, left : left + size].transpose(2, 0, 1)


@pytest.mark.parametrize(
    ("h", "w", "size"), [(48, 64, 32), (64, 48, 32), (90, 160, 224), (37, 53, 20), (50, 50, 50)]
)
def test_resize_center_crop_matches_pil(h, w, size):
    # Random noise is the worst case for a resampler; measured: max 1 grey level, mean about 0.001.
    images = np.random.default_rng(h * w).integers(0, 256, (3, h, w, 3), dtype=np.uint8)
    got = resize_center_crop(torch.from_numpy(images), size).numpy().astype(int)
    assert got.shape == (3, 3, size, size)
    for i in range(3):
        diff = np.abs(got[i] - _pil_reference(images[i], size))
        assert diff.max() <= 1 and diff.mean() < 0.01


def test_resize_center_crop_rejects_channel_first():
    with pytest.raises(ValueError, match=r"uint8 \[n, H, W, 3\]"):
        resize_center_crop(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), 4)


def test_normalize_video_values_and_zero_padding():
    video = torch.randint(0, 256, (2, 4, 3, 5, 5), dtype=torch.uint8)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    out = normalize_video(video, mask)
    assert out.dtype == torch.float32 and out.shape == video.shape
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    assert torch.allclose(out[0, 1], (video[0, 1].float() / 255 - mean) / std)
    assert torch.all(out[0, 2:] == 0) and torch.all(out[1, 3] == 0)
    assert out[1, 2].abs().sum() > 0
    with pytest.raises(ValueError, match="mask shape"):
        normalize_video(video, mask[0])
