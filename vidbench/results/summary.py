"""A few human lines for one result record (what `vidbench test` prints)."""

from __future__ import annotations

from typing import Any


def format_result(record: dict[str, Any]) -> str:
    lines = [
        f"{record['recipe']} seed {record['seed']}: {record['method_label']} [{record.get('backbone')}] on "
        f"{record['dataset']}/{record['split']} ({record['caption_policy']}-caption, "
        f"{record['num_queries']} queries x {record['num_gallery']} videos)"
    ]
    ckpt = record.get("checkpoint")
    if ckpt and ckpt.get("origin") != "vidbench":
        lines.append(f"  checkpoint: IMPORTED ({ckpt['origin']}) {ckpt['path']} sha256 {ckpt['sha256'][:12]}...")
    for name, proto in record["protocols"].items():
        m = proto["metrics"]
        lines.append(
            f"  {name:<10} t2v R@1 {m['t2v_R1']:.1f} R@5 {m['t2v_R5']:.1f} R@10 {m['t2v_R10']:.1f} "
            f"MdR {m['t2v_MdR']:.1f} MnR {m['t2v_MnR']:.1f} | v2t R@1 {m['v2t_R1']:.1f} R@5 {m['v2t_R5']:.1f} "
            f"R@10 {m['v2t_R10']:.1f} MdR {m['v2t_MdR']:.1f} MnR {m['v2t_MnR']:.1f}"
        )
    data = record.get("data", {})
    if data.get("skipped_videos"):
        lines.append(f"  skipped videos: {data['skipped_videos']} (policy {data['missing_policy']})")
    eff = record.get("efficiency")
    if eff:
        lines.append(
            f"  cost: {eff['params_total'] / 1e6:.2f} M params, text {eff['text_gflops_per_query']:.3g} GFLOPs/query, "
            f"video {eff['video_gflops_per_clip']:.3g} GFLOPs/clip, match {eff['match_flops_per_query']:.3g} "
            f"FLOPs/query, {eff['index_bytes_per_video']:.0f} B/video, {eff['ms_per_query']:.2f} ms/query "
            f"@{eff['gallery_size']}"
        )
    lines.append(f"  written: {record['paths']['run_dir']}/result.json")
    return "\n".join(lines)
