"""Procedural text-to-video benchmark written in the real MSRVTT and MSVD on-disk layouts.

Why it exists: ``make demo`` must train and evaluate every method with no download. The clips are dark
backgrounds with one to three coloured shapes that appear, move (or stay) and may vanish; captions are
templated English naming colour, shape, motion and event order. Colour alone makes the task learnable by a
tiny randomly initialised CLIP; direction, place and order reward temporal and local modelling.

The same files a user gets from the CLIP4Clip / Frozen-in-Time zips are written (spec/datasets.md §1-2),
so the synthetic data goes through exactly the loaders the real data does:

    out_dir/msrvtt/MSRVTT_data.json, MSRVTT_train.9k.csv, MSRVTT_train.7k.csv, MSRVTT_JSFUSION_test.csv,
                   videos/all/video{N}.mp4
    out_dir/msvd/train_list.txt, val_list.txt, test_list.txt, raw-captions.pkl, YouTubeClips/<id>.avi
    out_dir/README.txt, out_dir/ground_truth.json (the events behind every clip, for analysis)

Everything is a pure function of the seed and the arguments: planning (:func:`plan_benchmark`), caption
wording (:func:`event_phrases`, :func:`clip_captions`) and rendering (:func:`render_clip`) are separate so
tests can check that captions describe what is drawn.
"""

from __future__ import annotations

import json
import pickle
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from vidbench.data.video_writer import write_video
from vidbench.errors import ConfigError, DataError

# ----------------------------------------------------------------------------------------------------------
# Vocabulary

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 220, 40),
    "white": (240, 240, 240),
    "purple": (160, 60, 200),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "bar")
# Words a caption may use for each shape (synonyms vary the wording; the first is the canonical one).
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "square": ("square", "box"),
    "circle": ("circle", "ball", "disc"),
    "triangle": ("triangle",),
    "bar": ("bar", "stripe"),
}
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
MOTIONS: tuple[str, ...] = (*DIRECTIONS, "still")
PLACES: tuple[str, ...] = ("left", "right", "top", "bottom", "middle")

_DIR_WORDS = {"left": "to the left", "right": "to the right", "up": "upward", "down": "downward"}
_PLACE_WORDS = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "middle": "in the middle",
}
# {o}: object noun phrase, {d}: direction word, {dw}: direction phrase, {p}: place phrase.
_MOVE_TEMPLATES = (
    "{o} moves {d}",
    "{o} slides {d}",
    "{o} goes {d}",
    "{o} is moving {d}",
    "{o} drifts {dw}",
    "{o} travels {dw}",
    "{o} heads {d}",
    "{o} shifts {dw}",
    "{o} glides {dw}",
    "{o} appears and moves {d}",
    "{o} appears and then moves {d}",
    "{o} can be seen moving {d}",
)
_STILL_TEMPLATES = (
    "{o} appears {p}",
    "{o} stays still {p}",
    "{o} sits {p}",
    "{o} is shown {p}",
    "{o} shows up {p}",
    "{o} rests {p}",
    "{o} remains {p} without moving",
    "{o} stays {p}",
    "{o} is visible {p}",
    "{o} waits {p}",
)
_STILL_SHORT_TEMPLATES = ("{o} appears", "{o} stays still", "{o} shows up", "{o} does not move")
_VANISH_SUFFIXES = ("and then disappears", "and then vanishes", "then disappears", "before it disappears")
_CONNECTIVES = {
    2: ("{0} then {1}", "first {0} and then {1}", "{0} and after that {1}", "{0} and later {1}"),
    3: (
        "{0} then {1} then {2}",
        "first {0} then {1} and finally {2}",
        "{0} and after that {1} and then {2}",
        "{0} then {1} and later {2}",
    ),
}
_REVERSED_2 = "{1} after {0}"  # only when neither event vanishes, so "after" cannot be misread

YOUTUBE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
MSRVTT_CAPTIONS_PER_VIDEO = 10
MSVD_CAPTIONS_PER_VIDEO = (6, 12)  # inclusive range: MSVD has a varying number of captions per clip
README_MARKER = "vidbench synthetic benchmark"
# Encoder bit rate per pixel per frame. Left unset, FFmpeg's mpeg4 rate control smears 12 px shapes into
# blobs (a circle reads as a triangle); with this budget it sits at its best quantiser, ~10 kB per 8 s clip.
BITS_PER_PIXEL = 1.6


class EventDesc(NamedTuple):
    """What a caption can say about one event."""

    colour: str
    shape: str
    motion: str  # one of MOTIONS
    place: str | None  # one of PLACES for still events, None for moving ones
    vanishes: bool


@dataclass(frozen=True)
class Event:
    """One shape on screen: its description plus the geometry and timing the renderer needs.

    Coordinates are pixel centres in the full frame. The shape is visible for ``appear_s <= t < end_s``;
    it sits at ``start_xy`` until ``move_start_s`` and then moves linearly to ``end_xy`` at ``end_s``.
    """

    desc: EventDesc
    size: float
    appear_s: int
    end_s: int  # disappearance time if desc.vanishes, else the clip length
    move_start_s: int
    start_xy: tuple[float, float]
    end_xy: tuple[float, float]

    def position(self, t: float) -> tuple[float, float] | None:
        """Centre of the shape at time ``t`` in seconds, or None when it is not on screen."""
        if not self.appear_s <= t < self.end_s:
            return None
        span = self.end_s - self.move_start_s
        frac = 0.0 if span <= 0 else min(max((t - self.move_start_s) / span, 0.0), 1.0)
        return (
            self.start_xy[0] + frac * (self.end_xy[0] - self.start_xy[0]),
            self.start_xy[1] + frac * (self.end_xy[1] - self.start_xy[1]),
        )


@dataclass(frozen=True)
class Clip:
    """A whole synthetic video: id, length, background and its events in order of appearance."""

    video_id: str
    seconds: int
    background: tuple[int, int, int]
    noise_seed: int
    events: tuple[Event, ...]
    captions: tuple[str, ...]
    complete: tuple[bool, ...]  # caption i states every attribute of every event

    @property
    def key(self) -> tuple[tuple[str, str, str], ...]:
        """(colour, shape, motion) per event: the content a retrieval query must tell apart."""
        return tuple((e.desc.colour, e.desc.shape, e.desc.motion) for e in self.events)


# ----------------------------------------------------------------------------------------------------------
# Captions (pure)


def _noun(desc: EventDesc, shape_word: str) -> str:
    return f"a {desc.colour} {shape_word}"


def event_phrases(desc: EventDesc, *, complete: bool = True) -> list[str]:
    """Every wording of one event, in a fixed order (index 0 is the canonical one).

    ``complete=True`` gives the phrasings that state colour, shape, motion, place (still events) and
    disappearance; ``complete=False`` gives the shorter ones that leave the place or the disappearance out.
    Each phrasing names the colour word and one of ``SHAPE_WORDS[desc.shape]``.
    """
    if desc.colour not in COLOURS or desc.shape not in SHAPES or desc.motion not in MOTIONS:
        raise ValueError(f"unknown event description {desc}")
    if desc.motion == "still" and desc.place not in PLACES:
        raise ValueError(f"a still event needs a place from {PLACES}, got {desc.place!r}")
    full: list[str] = []
    short: list[str] = []
    for word in SHAPE_WORDS[desc.shape]:
        o = _noun(desc, word)
        if desc.motion == "still":
            p = _PLACE_WORDS[desc.place or "middle"]
            bases = [t.format(o=o, p=p) for t in _STILL_TEMPLATES]
            unplaced = [t.format(o=o) for t in _STILL_SHORT_TEMPLATES]
        else:
            bases = [t.format(o=o, d=desc.motion, dw=_DIR_WORDS[desc.motion]) for t in _MOVE_TEMPLATES]
            unplaced = []
        if desc.vanishes:
            full += [f"{b} {s}" for b in bases for s in _VANISH_SUFFIXES]
            short += bases + unplaced + [f"{b} {_VANISH_SUFFIXES[0]}" for b in unplaced]
        else:
            full += bases
            short += unplaced
    return full if complete else short


def canonical_caption(descs: list[EventDesc] | tuple[EventDesc, ...]) -> str:
    """The one fully detailed caption of a clip: canonical phrase per event joined by "then"."""
    clauses = [event_phrases(d)[0] for d in descs]
    if len(clauses) == 1:
        return clauses[0]
    return _CONNECTIVES[len(clauses)][0].format(*clauses)


def clip_captions(
    descs: list[EventDesc] | tuple[EventDesc, ...],
    rng: np.random.Generator,
    n: int,
    avoid: set[str] | frozenset[str] = frozenset(),
    partial_prob: float = 0.3,
) -> tuple[list[str], list[bool]]:
    """Up to ``n`` distinct captions for a clip and, for each, whether it describes everything.

    The canonical caption comes first. The others mix wordings and connectives; for multi-event clips a
    share of them (``partial_prob``) names a single event only, as real annotators often do. Strings in
    ``avoid`` (captions of other test videos) are not reused, so test queries rarely tie.
    """
    descs = tuple(descs)
    caps = [canonical_caption(descs)]
    flags = [True]
    seen = set(caps)
    phrase_full = [event_phrases(d) for d in descs]
    phrase_short = [event_phrases(d, complete=False) for d in descs]
    for _ in range(50 * n):
        if len(caps) >= n:
            break
        if len(descs) > 1 and rng.random() < partial_prob:
            k = int(rng.integers(len(descs)))
            pool = phrase_full[k] + phrase_short[k]
            cap, ok = pool[int(rng.integers(len(pool)))], False
        else:
            clauses = []
            ok = True
            for k in range(len(descs)):
                use_short = bool(phrase_short[k]) and rng.random() < 0.25
                pool = phrase_short[k] if use_short else phrase_full[k]
                ok = ok and not use_short
                clauses.append(pool[int(rng.integers(len(pool)))])
            if len(clauses) == 1:
                cap = clauses[0]
            else:
                forms = list(_CONNECTIVES[len(clauses)])
                if len(clauses) == 2 and not any(d.vanishes for d in descs):
                    forms.append(_REVERSED_2)
                cap = forms[int(rng.integers(len(forms)))].format(*clauses)
        if cap in seen or cap in avoid:
            continue
        seen.add(cap)
        caps.append(cap)
        flags.append(ok)
    return caps, flags


# ----------------------------------------------------------------------------------------------------------
# Planning (pure given the generator)


def _half_extent(shape: str, size: float) -> tuple[float, float]:
    """Half width and half height of a shape's bounding box."""
    if shape == "bar":
        return 0.8 * size, 0.22 * size
    return size / 2, size / 2


def _safe_square(width: int, height: int) -> tuple[float, float, float]:
    """Left, top and side of the central square that a short-side resize + centre crop keeps."""
    side = min(width, height)
    return (width - side) / 2, (height - side) / 2, float(side)


def _box_overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Overlap area of two (cx, cy, hx, hy) boxes divided by the smaller box's area."""
    ox = min(a[0] + a[2], b[0] + b[2]) - max(a[0] - a[2], b[0] - b[2])
    oy = min(a[1] + a[3], b[1] + b[3]) - max(a[1] - a[3], b[1] - b[3])
    if ox <= 0 or oy <= 0:
        return 0.0
    return ox * oy / min(4 * a[2] * a[3], 4 * b[2] * b[3])


def _sample_geometry(
    rng: np.random.Generator, desc: EventDesc, size: float, frame: tuple[int, int]
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Start and end centres inside the centre-crop square, with a displacement visible at 1 fps."""
    left, top, side = _safe_square(*frame)
    hx, hy = _half_extent(desc.shape, size)
    lo_x, hi_x = left + hx + 1, left + side - hx - 1
    lo_y, hi_y = top + hy + 1, top + side - hy - 1
    if desc.motion == "still":
        fx, fy = {
            "left": (0.25, 0.5),
            "right": (0.75, 0.5),
            "top": (0.5, 0.25),
            "bottom": (0.5, 0.75),
            "middle": (0.5, 0.5),
        }[desc.place or "middle"]
        jx, jy = rng.uniform(-0.06, 0.06, size=2) * side
        x = float(np.clip(left + fx * side + jx, lo_x, hi_x))
        y = float(np.clip(top + fy * side + jy, lo_y, hi_y))
        return (x, y), (x, y)
    horizontal = desc.motion in ("left", "right")
    lo, hi = (lo_x, hi_x) if horizontal else (lo_y, hi_y)
    dist = min(rng.uniform(0.3, 0.5) * side, hi - lo)
    sign = -1.0 if desc.motion in ("left", "up") else 1.0
    start = rng.uniform(lo + dist, hi) if sign < 0 else rng.uniform(lo, hi - dist)
    other = rng.uniform(lo_y, hi_y) if horizontal else rng.uniform(lo_x, hi_x)
    end = start + sign * dist
    if horizontal:
        return (float(start), float(other)), (float(end), float(other))
    return (float(other), float(start)), (float(other), float(end))


def _max_overlap(ev: Event, others: list[Event], seconds: int) -> float:
    worst = 0.0
    for t in range(seconds):
        p = ev.position(t)
        if p is None:
            continue
        for o in others:
            q = o.position(t)
            if q is not None:
                a = (*p, *_half_extent(ev.desc.shape, ev.size))
                b = (*q, *_half_extent(o.desc.shape, o.size))
                worst = max(worst, _box_overlap(a, b))
    return worst


def plan_clip(
    rng: np.random.Generator,
    video_id: str,
    *,
    seconds: tuple[int, int],
    frame: tuple[int, int],
    n_captions: int,
    avoid_keys: set | None = None,
    avoid_captions: set[str] | None = None,
) -> Clip:
    """Draw one clip: length, 1-3 events in order of appearance, their geometry and captions.

    ``avoid_keys`` holds the (colour, shape, motion) content of clips already in the same test split; a
    clip repeating one is redrawn (up to 50 times) so that retrieval has one right answer per query.
    """
    for _ in range(50):
        clip = _draw_clip(rng, video_id, seconds, frame, n_captions, avoid_captions or set())
        if avoid_keys is None or clip.key not in avoid_keys:
            break
    return clip


def _draw_clip(
    rng: np.random.Generator,
    video_id: str,
    seconds: tuple[int, int],
    frame: tuple[int, int],
    n_captions: int,
    avoid_captions: set[str],
) -> Clip:
    length = int(rng.integers(seconds[0], seconds[1] + 1))
    n_events = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    n_events = max(1, min(n_events, length - 1))  # each event needs >= 2 s on screen, 1 s apart
    colours = [list(COLOURS)[i] for i in rng.choice(len(COLOURS), size=n_events, replace=False)]
    side = min(frame)
    events: list[Event] = []
    appear = 0 if rng.random() < 0.6 or length - 2 < n_events else 1
    for k in range(n_events):
        if k > 0:
            latest = length - 2 - (n_events - 1 - k)  # leave room for the events still to come
            appear = int(rng.integers(appear + 1, max(appear + 1, min(appear + 3, latest)) + 1))
        motion = MOTIONS[int(rng.integers(len(MOTIONS)))]
        place = PLACES[int(rng.integers(len(PLACES)))] if motion == "still" else None
        can_vanish = length - 1 >= appear + 2
        vanishes = bool(can_vanish and rng.random() < 0.3)
        end = int(rng.integers(appear + 2, length)) if vanishes else length
        move_start = appear + 1 if motion != "still" and end - appear >= 3 and rng.random() < 0.4 else appear
        desc = EventDesc(colours[k], SHAPES[int(rng.integers(len(SHAPES)))], motion, place, vanishes)
        size = float(rng.uniform(0.22, 0.33) * side)
        best: Event | None = None
        best_overlap = np.inf
        for _ in range(30):  # keep shapes from hiding each other
            start_xy, end_xy = _sample_geometry(rng, desc, size, frame)
            ev = Event(desc, size, appear, end, move_start, start_xy, end_xy)
            overlap = _max_overlap(ev, events, length)
            if overlap < best_overlap:
                best, best_overlap = ev, overlap
            if overlap <= 0.1:
                break
        assert best is not None
        events.append(best)
    grey = int(rng.integers(15, 71))
    background = tuple(int(np.clip(grey + rng.integers(-6, 7), 0, 255)) for _ in range(3))
    caps, flags = clip_captions([e.desc for e in events], rng, n_captions, avoid=avoid_captions)
    return Clip(
        video_id=video_id,
        seconds=length,
        background=background,  # type: ignore[arg-type]
        noise_seed=int(rng.integers(2**31)),
        events=tuple(events),
        captions=tuple(caps),
        complete=tuple(flags),
    )


def _youtube_id(rng: np.random.Generator, index: int, length: int, taken: set[str]) -> str:
    """A YouTube-like ``<11 chars>_<start>_<end>`` id; some start with '-' or contain '_' on purpose."""
    while True:
        chars = [YOUTUBE_ALPHABET[i] for i in rng.integers(0, 62, size=11)]
        if index % 4 == 0:
            chars[0] = "-"
        if index % 3 == 1:
            chars[int(rng.integers(1, 10))] = "_"
        start = int(rng.integers(0, 300))
        vid = f"{''.join(chars)}_{start}_{start + length}"
        if vid not in taken:
            taken.add(vid)
            return vid


def plan_benchmark(
    seed: int = 0,
    *,
    n_train: int = 320,
    n_test: int = 100,
    n_msvd_train: int = 120,
    n_msvd_val: int | None = None,
    n_msvd_test: int = 60,
    size: tuple[int, int] = (64, 48),
    seconds: tuple[int, int] = (6, 10),
) -> dict[str, dict[str, list[Clip]]]:
    """Every clip of the benchmark, without touching the disk: ``{"msrvtt"|"msvd": {split: [Clip]}}``."""
    _check_args(seed, n_train, n_test, n_msvd_train, n_msvd_test, size, seconds)
    n_val = max(1, n_msvd_test // 6) if n_msvd_val is None else n_msvd_val
    if n_val < 0:
        raise ConfigError(f"synthetic benchmark: n_msvd_val must be >= 0, got {n_val}")
    out: dict[str, dict[str, list[Clip]]] = {"msrvtt": {}, "msvd": {}}

    rng = np.random.default_rng([seed, 0])
    kw = {"seconds": seconds, "frame": size}
    out["msrvtt"]["train"] = [
        plan_clip(rng, f"video{i}", n_captions=MSRVTT_CAPTIONS_PER_VIDEO, **kw) for i in range(n_train)
    ]
    keys: set = set()
    used: set[str] = set()
    test: list[Clip] = []
    for i in range(n_train, n_train + n_test):
        clip = plan_clip(
            rng, f"video{i}", n_captions=MSRVTT_CAPTIONS_PER_VIDEO, avoid_keys=keys, avoid_captions=used, **kw
        )
        keys.add(clip.key)
        used.update(clip.captions)
        test.append(clip)
    out["msrvtt"]["test"] = test

    rng = np.random.default_rng([seed, 1])
    taken: set[str] = set()
    index = 0
    for split, count in (("train", n_msvd_train), ("val", n_val), ("test", n_msvd_test)):
        keys, used, clips = set(), set(), []
        for _ in range(count):
            length = int(rng.integers(seconds[0], seconds[1] + 1))
            vid = _youtube_id(rng, index, length, taken)
            n_caps = int(rng.integers(MSVD_CAPTIONS_PER_VIDEO[0], MSVD_CAPTIONS_PER_VIDEO[1] + 1))
            evaluated = split != "train"
            clip = plan_clip(
                rng,
                vid,
                seconds=(length, length),
                frame=size,
                n_captions=n_caps,
                avoid_keys=keys if evaluated else None,
                avoid_captions=used if evaluated else None,
            )
            keys.add(clip.key)
            used.update(clip.captions)
            clips.append(clip)
            index += 1
        out["msvd"][split] = clips
    return out


def _check_args(
    seed: int,
    n_train: int,
    n_test: int,
    n_msvd_train: int,
    n_msvd_test: int,
    size: tuple[int, int],
    seconds: tuple[int, int],
) -> None:
    if seed < 0:
        raise ConfigError(f"synthetic benchmark: seed must be >= 0, got {seed}")
    if min(n_train, n_test, n_msvd_train, n_msvd_test) < 1:
        raise ConfigError("synthetic benchmark: every split needs at least one video (n_* >= 1)")
    w, h = size
    if w % 2 or h % 2 or min(w, h) < 16:
        raise ConfigError(f"synthetic benchmark: size {w}x{h} must be even and at least 16 px on each side")
    if seconds[0] < 3 or seconds[1] < seconds[0]:
        raise ConfigError(f"synthetic benchmark: seconds={seconds} must satisfy 3 <= min <= max")


# ----------------------------------------------------------------------------------------------------------
# Rendering (pure)


def shape_mask(shape: str, cx: float, cy: float, size: float, width: int, height: int) -> np.ndarray:
    """Boolean ``[H, W]`` mask of a shape centred at (cx, cy), sampled at pixel centres."""
    xs = np.arange(width, dtype=np.float64)[None, :] + 0.5 - cx
    ys = np.arange(height, dtype=np.float64)[:, None] + 0.5 - cy
    r = size / 2
    if shape == "square":
        return (np.abs(xs) <= r) & (np.abs(ys) <= r)
    if shape == "circle":
        return xs**2 + ys**2 <= r**2
    if shape == "triangle":  # apex up
        rel = (ys + r) / size
        return (rel >= 0) & (rel <= 1) & (np.abs(xs) <= rel * r)
    if shape == "bar":
        hx, hy = _half_extent("bar", size)
        return (np.abs(xs) <= hx) & (np.abs(ys) <= hy)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render_clip(clip: Clip, size: tuple[int, int], fps: int) -> np.ndarray:
    """Frames ``[seconds * fps, H, W, 3]`` uint8 RGB of a clip; later events are drawn on top.

    The background noise is fixed over time (cheap to encode, still not a flat colour).
    """
    width, height = size
    noise = np.random.default_rng(clip.noise_seed).normal(0.0, 1.5, size=(height, width, 1))
    base = np.clip(np.asarray(clip.background, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    frames = np.repeat(base[None], clip.seconds * fps, axis=0)
    for i in range(len(frames)):
        t = i / fps
        for ev in clip.events:
            pos = ev.position(t)
            if pos is not None:
                # Whole-pixel centres keep the raster of a shape identical while it moves, which the
                # encoder's motion compensation copies almost for free (about 35% smaller files).
                cx, cy = float(np.floor(pos[0] + 0.5)), float(np.floor(pos[1] + 0.5))
                mask = shape_mask(ev.desc.shape, cx, cy, ev.size, width, height)
                frames[i][mask] = COLOURS[ev.desc.colour]
    return frames


# ----------------------------------------------------------------------------------------------------------
# Writing


def _jsfusion_caption(clip: Clip, rng: np.random.Generator, used: set[str]) -> str:
    """One complete caption per test video, not shared with another test video where possible."""
    options = [c for c, ok in zip(clip.captions, clip.complete, strict=True) if ok and c not in used]
    cap = options[int(rng.integers(len(options)))] if options else clip.captions[0]
    used.add(cap)
    return cap


def _msrvtt_split_name(index: int, n_train: int) -> str:
    """Official split of a train id, mirroring 9k = official train (6,513) + val (497) + 1,990 test ids."""
    if index < round(n_train * 6513 / 9000):
        return "train"
    if index < round(n_train * 7010 / 9000):
        return "validate"
    return "test"


def _write_msrvtt(root: Path, clips: dict[str, list[Clip]], seed: int, size, fps, progress) -> dict:
    train, test = clips["train"], clips["test"]
    n7 = max(1, round(len(train) * 7010 / 9000))
    rng = np.random.default_rng([seed, 2])
    videos, sentences = [], []
    for i, clip in enumerate(train + test):
        split = _msrvtt_split_name(i, len(train)) if i < len(train) else "test"
        videos.append(
            {
                "id": i,
                "video_id": clip.video_id,
                "category": int(rng.integers(20)),
                "url": f"https://example.invalid/vidbench-synthetic/{clip.video_id}",
                "start time": 0.0,
                "end time": float(clip.seconds),
                "split": split,
            }
        )
        for cap in clip.captions:
            sentences.append({"sen_id": len(sentences), "video_id": clip.video_id, "caption": cap})
    data = {
        "info": {
            "contributor": README_MARKER,
            "data_created": "synthetic",
            "version": "1.0",
            "year": "2024",
            "seed": seed,
        },
        "videos": videos,
        "sentences": sentences,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "MSRVTT_data.json").write_text(json.dumps(data), encoding="utf-8")
    (root / "MSRVTT_train.9k.csv").write_text(
        "video_id\n" + "".join(f"{c.video_id}\n" for c in train), encoding="utf-8"
    )
    (root / "MSRVTT_train.7k.csv").write_text(
        "video_id\n" + "".join(f"{c.video_id}\n" for c in train[:n7]), encoding="utf-8"
    )
    used: set[str] = set()
    rows = ["key,vid_key,video_id,sentence\n"]
    for k, clip in enumerate(test):
        cap = _jsfusion_caption(clip, rng, used)
        if any(ch in cap for ch in ',"\n'):
            raise DataError(f"synthetic caption needs csv quoting, which the generator never emits: {cap!r}")
        rows.append(f"ret{k},msr{clip.video_id[5:]},{clip.video_id},{cap}\n")
    (root / "MSRVTT_JSFUSION_test.csv").write_text("".join(rows), encoding="utf-8")
    vdir = root / "videos" / "all"
    for j, clip in enumerate(train + test):
        write_video(vdir / f"{clip.video_id}.mp4", render_clip(clip, size, fps), fps=fps, bit_rate=_bit_rate(size, fps))
        _report(progress, "msrvtt", j + 1, len(train) + len(test))
    return {
        "root": str(root),
        "videos_dir": str(vdir),
        "n_train": len(train),
        "n_train_7k": n7,
        "n_test": len(test),
        "n_captions": len(sentences),
    }


def _write_msvd(root: Path, clips: dict[str, list[Clip]], size, fps, progress) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    captions: dict[str, list[list[str]]] = {}
    for split in ("train", "val", "test"):
        (root / f"{split}_list.txt").write_text("".join(f"{c.video_id}\n" for c in clips[split]), encoding="utf-8")
        for c in clips[split]:
            captions[c.video_id] = [cap.lower().split() for cap in c.captions]
    (root / "raw-captions.pkl").write_bytes(pickle.dumps(captions, protocol=4))
    vdir = root / "YouTubeClips"
    every = [c for s in ("train", "val", "test") for c in clips[s]]
    for j, clip in enumerate(every):
        write_video(vdir / f"{clip.video_id}.avi", render_clip(clip, size, fps), fps=fps, bit_rate=_bit_rate(size, fps))
        _report(progress, "msvd", j + 1, len(every))
    return {
        "root": str(root),
        "videos_dir": str(vdir),
        "n_train": len(clips["train"]),
        "n_val": len(clips["val"]),
        "n_test": len(clips["test"]),
        "n_captions": sum(len(v) for v in captions.values()),
    }


def _bit_rate(size: tuple[int, int], fps: int) -> int:
    return int(BITS_PER_PIXEL * size[0] * size[1] * fps)


def _report(progress: bool, name: str, done: int, total: int) -> None:
    if progress and (done == total or done % 50 == 0):
        print(f"[synth] {name}: {done}/{total} videos", file=sys.stderr, flush=True)


def _prepare_out_dir(out: Path) -> None:
    """Refuse to write into a folder that holds something else; clear a previous synthetic output."""
    if not out.exists():
        out.mkdir(parents=True)
        return
    if not out.is_dir():
        raise DataError(f"{out} exists and is not a directory; pick another --out")
    readme = out / "README.txt"
    ours = readme.is_file() and readme.read_text(encoding="utf-8", errors="replace").startswith(README_MARKER)
    if any(out.iterdir()) and not ours:
        raise DataError(
            f"{out} is not empty and does not hold a previous synthetic benchmark; "
            "refusing to write there. Pick an empty or new folder for --out."
        )
    for sub in ("msrvtt", "msvd"):  # stale videos from a larger earlier run would otherwise linger
        if (out / sub).exists():
            shutil.rmtree(out / sub)


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _clip_record(clip: Clip) -> dict:
    rec = asdict(clip)
    rec["events"] = [
        {
            **asdict(e),
            "desc": e.desc._asdict(),
            "size": round(e.size, 3),
            "start_xy": [round(v, 3) for v in e.start_xy],
            "end_xy": [round(v, 3) for v in e.end_xy],
        }
        for e in clip.events
    ]
    return rec


def generate(
    out_dir: str | Path,
    seed: int = 0,
    *,
    n_train: int = 320,
    n_test: int = 100,
    n_msvd_train: int = 120,
    n_msvd_test: int = 60,
    n_msvd_val: int | None = None,
    size: tuple[int, int] = (64, 48),
    fps: int = 8,
    seconds: tuple[int, int] = (6, 10),
    progress: bool = True,
) -> dict:
    """Write the synthetic MSRVTT and MSVD benchmarks under ``out_dir`` and return a summary.

    ``size`` is (width, height); the default is deliberately not square so the centre crop matters (all
    shapes stay inside the central square). ``n_msvd_val`` defaults to ``max(1, n_msvd_test // 6)``.
    Same seed and arguments give the same annotation files and rendered frames; the encoded videos are
    byte-identical on the same FFmpeg build and encoder thread count (see README.txt next to the data).
    """
    t0 = time.perf_counter()
    size = (int(size[0]), int(size[1]))
    seconds = (int(seconds[0]), int(seconds[1]))
    if fps < 1:
        raise ConfigError(f"synthetic benchmark: fps must be >= 1, got {fps}")
    plan = plan_benchmark(
        seed,
        n_train=n_train,
        n_test=n_test,
        n_msvd_train=n_msvd_train,
        n_msvd_val=n_msvd_val,
        n_msvd_test=n_msvd_test,
        size=size,
        seconds=seconds,
    )
    out = Path(out_dir)
    _prepare_out_dir(out)
    msrvtt = _write_msrvtt(out / "msrvtt", plan["msrvtt"], seed, size, fps, progress)
    msvd = _write_msvd(out / "msvd", plan["msvd"], size, fps, progress)
    truth = {ds: {s: [_clip_record(c) for c in clips] for s, clips in d.items()} for ds, d in plan.items()}
    (out / "ground_truth.json").write_text(json.dumps(truth), encoding="utf-8")
    (out / "README.txt").write_text(_readme(seed, msrvtt, msvd, size, fps, seconds), encoding="utf-8")
    summary = {
        "out_dir": str(out),
        "seed": seed,
        "size": list(size),
        "fps": fps,
        "seconds": list(seconds),
        "msrvtt": msrvtt,
        "msvd": msvd,
        "bytes": _tree_bytes(out),
        "elapsed_s": round(time.perf_counter() - t0, 3),
    }
    if progress:
        print(
            f"[synth] wrote {summary['bytes'] / 1e6:.1f} MB to {out} in {summary['elapsed_s']:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    return summary


def _readme(seed: int, msrvtt: dict, msvd: dict, size, fps: int, seconds) -> str:
    return f"""{README_MARKER}
(generated by vidbench.data.synthetic.generate; safe to delete and regenerate)

What this is: procedural clips of coloured shapes (colours {", ".join(COLOURS)}; shapes {", ".join(SHAPES)})
that appear, move left/right/up/down or stay at a place, and may disappear; 1-3 events per clip, ordered in
time. Captions are templated English naming colour, shape, motion/place, disappearance and event order;
some name only one event of a multi-event clip. The files follow the real MSRVTT and MSVD layouts, so the
ordinary loaders read them.

seed: {seed}
frame size (width x height): {size[0]}x{size[1]}, fps: {fps}, clip length: {seconds[0]}-{seconds[1]} s
shapes stay inside the central {min(size)}x{min(size)} square (what a short-side resize + centre crop keeps)

msrvtt/  train (9k csv): {msrvtt["n_train"]} videos, 7k csv: {msrvtt["n_train_7k"]}, JSFusion test: \
{msrvtt["n_test"]} videos (1 caption each), {MSRVTT_CAPTIONS_PER_VIDEO} captions per video in MSRVTT_data.json
         ({msrvtt["n_captions"]} in all); videos in msrvtt/videos/all/video{{N}}.mp4 (mpeg4)
msvd/    train {msvd["n_train"]}, val {msvd["n_val"]}, test {msvd["n_test"]} videos; \
{MSVD_CAPTIONS_PER_VIDEO[0]}-{MSVD_CAPTIONS_PER_VIDEO[1]} captions per video
         ({msvd["n_captions"]} in all); raw-captions.pkl maps id -> list of token lists;
         videos in msvd/YouTubeClips/<id>.avi (mpeg4)
ground_truth.json: the events (colour, shape, motion, place, timing, geometry) behind every clip.

Test splits: no two test videos share the same (colour, shape, motion) content and, where possible, no
caption is shared between test videos. Chance R@1 = 1 / number of test videos.

Determinism: the same seed and arguments give identical annotation files, ground_truth.json and rendered
frames everywhere. Encoded videos (container bytes and decoded frames) are identical on the same FFmpeg
build with the same encoder thread count; FFmpeg's mpeg4 encoder cuts one slice per thread, so a writer
that lets FFmpeg pick the thread count from the CPU count gives slightly different pixels on other machines.
"""
