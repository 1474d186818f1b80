"""Plain records shared by the dataset adapters, the DataModule and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class VideoRef:
    """One gallery video: its dataset id, its resolved file and an optional time window in seconds."""

    video_id: str
    path: Path | None  # None when no file was found for this id
    start_s: float | None = None
    end_s: float | None = None


@dataclass
class SplitIndex:
    """Everything one split holds, in a fixed order.

    Captions are grouped contiguously by video and follow the order of ``videos``; ``caption_video[i]``
    is the index into ``videos`` of caption ``i`` (non-decreasing). Training expands every
    (video, caption) pair into a sample; evaluation ranks every caption against every video.
    """

    dataset: str
    split: str
    videos: list[VideoRef]
    captions: list[str]
    caption_video: list[int]
    multi_caption: bool  # evaluation protocol: several captions (queries) per video
    text_unit: str = "sentence"  # "sentence" or "paragraph"
    notes: dict[str, object] = field(default_factory=dict)  # counts worth logging (e.g. dropped rows)

    @property
    def missing_ids(self) -> list[str]:
        return [v.video_id for v in self.videos if v.path is None]

    def __post_init__(self) -> None:
        if len(self.captions) != len(self.caption_video):
            raise ValueError("captions and caption_video differ in length")
        if any(b < a for a, b in zip(self.caption_video, self.caption_video[1:], strict=False)):
            raise ValueError("captions must be grouped contiguously in video order")
