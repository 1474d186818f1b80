"""The ``vidbench`` command: a thin layer that parses arguments and calls the library."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vidbench.errors import VidbenchError


def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe name (see `vidbench list`) or path to a recipe YAML")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. optim.lr=3e-4 run.seed=1")


def _compose(args: argparse.Namespace):
    from vidbench.config import compose

    return compose(args.recipe, args.overrides)


def cmd_fit(args: argparse.Namespace) -> int:
    from vidbench import runner

    if getattr(args, "init_from", None):
        args.overrides = [*args.overrides, f"model.init_from={args.init_from}"]
    cfg = _compose(args)
    out = runner.fit(cfg)
    print(f"fit done: {out}")
    if args.test:
        return cmd_test(args)
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from vidbench import runner
    from vidbench.results.summary import format_result

    cfg = _compose(args)
    ckpt = None if getattr(args, "zero_shot", False) else (getattr(args, "ckpt", None) or "last")
    record = runner.test(cfg, ckpt=ckpt)
    print(format_result(record))
    return 0


def cmd_import_checkpoint(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from vidbench.methods import build_method
    from vidbench.reference_ckpt import import_checkpoint, write_converted

    cfg = _compose(args)
    method = build_method(cfg)
    imported = import_checkpoint(args.file, method, cfg.run.name)
    out = write_converted(imported, args.out, cfg.run.name, OmegaConf.to_container(cfg, resolve=True))
    print(
        f"{imported.path} ({imported.origin} checkpoint, sha256 {imported.sha256[:12]}...): "
        f"{len(imported.state_dict)} tensors mapped onto {cfg.run.name}, written to {out}\n"
        f"  test it: vidbench test {cfg.run.name} --ckpt {out}\n"
        f"  train from it: vidbench fit {cfg.run.name} --init-from {out}"
    )
    for note in imported.notes:
        print(f"  note: {note}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from vidbench.data.synthetic import generate

    summary = generate(args.out, seed=args.seed, progress=True)
    print(f"synthetic benchmark written to {args.out}: {summary.get('counts', summary)}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from vidbench.data.datasets import load_split
    from vidbench.data.verify import format_manifest_summary, verify_split

    cfg = _compose(args)
    d = cfg.data
    splits = {"train": d.train_split, "test": d.test_split}
    chosen = splits.values() if args.split == "both" else [splits[args.split]]
    out_dir = Path(args.out) if args.out else Path(d.root) / "manifests"
    bad = 0
    for split in chosen:
        index = load_split(d.dataset, d.root, split, video_root=d.video_root)
        manifest = verify_split(index, out_dir / f"{d.dataset}_{split}.json")
        print(format_manifest_summary(manifest))
        bad += manifest["summary"]["missing"] + manifest["summary"]["undecodable"]
    return 1 if bad and args.strict else 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    from vidbench.results.aggregate import aggregate, format_report

    report = aggregate(Path(args.runs), Path(args.out))
    print(format_report(report))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.data_root is not None:
        if not args.data_root:  # checked before the heavy imports: the answer comes within a second
            raise VidbenchError(
                "DATA_ROOT is empty: pass DATA_ROOT=/path/to/datasets (holding msrvtt/, msvd/, ...; see the "
                "README's 'Data layout'), or run `make demo` to try the suite on the synthetic benchmark"
            )
        overrides.insert(0, f"paths.data_root={args.data_root}")
    from vidbench.reproduce import run_suite
    from vidbench.results.aggregate import aggregate, format_report
    from vidbench.suites import load_suite

    if args.gpus:
        overrides += [f"trainer.devices={args.gpus}", "trainer.accelerator=gpu"]
    rows = run_suite(load_suite(args.suite), overrides=overrides, seeds=args.seeds, clip=args.clip, runs_dir=args.runs)
    report = aggregate(Path(args.runs), Path(args.out))
    print(format_report(report))
    failed = [r for r in rows if r[2].startswith("failed")]
    for recipe, seed, status in failed:
        print(f"FAILED: {recipe} seed {seed}: {status}", file=sys.stderr)
    return 1 if failed else 0


def cmd_list(args: argparse.Namespace) -> int:
    from vidbench.config import RECIPES_DIR, list_recipes

    for path in list_recipes():
        print(path.relative_to(RECIPES_DIR).with_suffix(""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidbench", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="train a recipe (resumes from the run directory's last.ckpt)")
    _recipe_args(p)
    p.add_argument("--test", action="store_true", help="run `test` after training")
    p.add_argument(
        "--init-from",
        metavar="CKPT",
        help="start from these weights (vidbench, `import-checkpoint` output, or a reference checkpoint); "
        "same as model.init_from=CKPT",
    )
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("test", help="evaluate a recipe's checkpoint and write result.json")
    _recipe_args(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--ckpt",
        help="checkpoint path (default: <run dir>/last.ckpt); also a CLIP4Clip/DRL/EERCF pytorch_model.bin.<epoch> "
        "or an HCQ checkpoint, tested in runs/<recipe>+imported-<origin>-<sha>/",
    )
    g.add_argument("--zero-shot", action="store_true", help="evaluate the untrained backbone")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser(
        "import-checkpoint", help="convert a reference checkpoint (CLIP4Clip, DRL, EERCF, HCQ) onto a recipe's method"
    )
    p.add_argument("file", help="the checkpoint trained with the reference code")
    p.add_argument("--recipe", required=True, help="the recipe whose method the weights belong to")
    p.add_argument("--out", required=True, help="where to write the converted vidbench checkpoint")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. model.clip=/weights/ViT-B-32.pt")
    p.set_defaults(func=cmd_import_checkpoint)

    p = sub.add_parser("synth", help="write the offline synthetic benchmark (MSRVTT and MSVD layouts)")
    p.add_argument("--out", default="data/synth")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("verify-data", help="manifest of present / missing / undecodable videos per split")
    _recipe_args(p)
    p.add_argument("--split", choices=["train", "test", "both"], default="both")
    p.add_argument("--out", help="manifest folder (default: <data root>/manifests)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any video is missing or undecodable")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("aggregate", help="runs/*/result.json -> leaderboard.md, results.csv, plots")
    p.add_argument("--runs", default="runs")
    p.add_argument("--out", default="results")
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("reproduce", help="fit + test every recipe x seed of a suite, then aggregate")
    p.add_argument("suite", help="suite name under recipes/suites/ (demo, msrvtt, msvd, ...) or a YAML path")
    p.add_argument("overrides", nargs="*", help="dotlist overrides applied to every recipe")
    p.add_argument("--data-root", help="folder holding <dataset>/ folders (sets paths.data_root)")
    p.add_argument("--clip", help="'tiny', or a folder holding clip-vit-base-patch32/ and clip-vit-base-patch16/")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the suite's)")
    p.add_argument("--gpus", type=int, help="GPUs per run (DDP); default: all that are visible")
    p.add_argument("--runs", default="runs")
    p.add_argument("--out", default="results")
    p.set_defaults(func=cmd_reproduce)

    from vidbench.slurm import add_run_task_parser, add_submit_parser  # light: no Lightning import

    add_submit_parser(sub)
    add_run_task_parser(sub)

    p = sub.add_parser("list", help="list the recipes")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except VidbenchError as exc:
        print(f"vidbench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
