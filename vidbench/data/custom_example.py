"""Write annotation files in the custom format for the synthetic MSVD videos (README "Your own dataset").

``python -m vidbench.data.custom_example data/synth data/custom-example`` reads the synthetic benchmark's
MSVD split lists and captions and writes ``train.csv`` / ``test.csv`` (or ``.tsv`` / ``.jsonl``) with the
columns of :mod:`vidbench.data.datasets.custom`. Nothing is written into the synthetic data folder.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from vidbench.data.datasets.msvd import load_split as load_msvd
from vidbench.io import write_text_atomic


def write_custom_example(
    synth_root: str | Path,
    out: str | Path,
    *,
    fmt: str = "csv",
    captions_per_video: int | None = None,
    clips: bool = False,
    paths: bool = False,
) -> dict[str, Path]:
    """One file per split (train, test) over ``<synth_root>/msvd``'s videos.

    ``captions_per_video``: keep the first N captions (1: single-caption); ``clips``: each video becomes two
    clips, ``[0, 1.5]`` and ``[1.5, 3]`` s, sharing its captions; ``paths``: the video column holds the
    path relative to the video root (``YouTubeClips/<id>.avi``) instead of the id.
    """
    if fmt not in ("csv", "tsv", "jsonl"):
        raise ValueError(f"fmt must be csv, tsv or jsonl, got {fmt!r}")
    msvd = Path(synth_root) / "msvd"
    written: dict[str, Path] = {}
    for split in ("train", "test"):
        index = load_msvd(msvd, split)
        rows: list[dict[str, object]] = []
        for i, ref in enumerate(index.videos):
            caps = [c for c, v in zip(index.captions, index.caption_video, strict=True) if v == i]
            caps = caps[:captions_per_video] if captions_per_video else caps
            video = f"YouTubeClips/{ref.path.name}" if paths and ref.path is not None else ref.video_id
            windows = [(0.0, 1.5), (1.5, 3.0)] if clips else [(None, None)]
            for start, end in windows:
                for cap in caps:
                    row: dict[str, object] = {"video": video, "caption": cap}
                    if clips:
                        row.update(start=start, end=end)
                    rows.append(row)
        path = Path(out) / f"{split}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, _format(rows, fmt))
        written[split] = path
    return written


def _format(rows: list[dict[str, object]], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("synth_root", help="the folder `vidbench synth --out` wrote")
    p.add_argument("out", help="where the annotation files go (e.g. data/custom-example)")
    p.add_argument("--format", choices=["csv", "tsv", "jsonl"], default="csv")
    p.add_argument("--captions-per-video", type=int, help="keep the first N captions (1: single-caption)")
    p.add_argument("--clips", action="store_true", help="two clips per video, with start/end columns")
    args = p.parse_args(argv)
    files = write_custom_example(
        args.synth_root, args.out, fmt=args.format, captions_per_video=args.captions_per_video, clips=args.clips
    )
    for split, path in files.items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
