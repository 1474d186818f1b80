"""The ``vidbench`` command: a thin layer that parses arguments and calls the library."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from vidbench.errors import VidbenchError


def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe name (see `vidbench list`) or path to a recipe YAML")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. optim.lr=3e-4 run.seed=1")


def _compose(args: argparse.Namespace):
    from vidbench.config import compose

    return compose(args.recipe, args.overrides)


# A dotlist override: a (dotted) key, then '=' and the value, e.g. optim.lr=3e-4, slurm.extra=[a,b].
_OVERRIDE_RE = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*(\[\d+\])?=")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _takes_one_value(parser: argparse.ArgumentParser, token: str) -> bool:
    """Whether option ``token`` consumes exactly the next word (so a key=value there is its value)."""
    for action in parser._actions:
        if token in action.option_strings:
            return action.nargs is None or action.nargs == 1
    return False


def split_overrides(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """Pull every ``key=value`` word out of ``argv``, wherever it stands; returns (rest, overrides).

    argparse alone accepts positional overrides only in one run right after the recipe; users type them
    after flags too (``verify-data R --split test paths.data_root=/x``). A word that is the value of an
    option taking exactly one value (``--out a=b``) stays with its option.
    """
    subs = _subparsers(parser)
    current = parser
    rest: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            rest += argv[i:]
            break
        if word.startswith("-"):
            rest.append(word)
            if "=" not in word and _takes_one_value(current, word) and i + 1 < len(argv):
                rest.append(argv[i + 1])
                i += 1
        elif current is parser and word in subs:
            current = subs[word]
            rest.append(word)
        elif current is not parser and _OVERRIDE_RE.match(word):
            overrides.append(word)
        else:
            rest.append(word)
        i += 1
    return rest, overrides


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line with ``key=value`` overrides allowed anywhere after the subcommand."""
    parser = build_parser()
    rest, overrides = split_overrides(parser, list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(rest)
    if overrides:
        if hasattr(args, "overrides"):
            args.overrides = [*overrides, *args.overrides]
        elif hasattr(args, "items"):
            args.items = [*args.items, *overrides]
        else:
            parser.error(f"`{args.command}` takes no key=value overrides (got {' '.join(overrides)})")
    return args


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
    """Report every chosen split, even after one fails; exit 1 when a test split is incomplete (see --help)."""
    from vidbench.data.verify import verify_data

    cfg = _compose(args)
    if cfg.data.mmt is not None:
        return _verify_mmt(cfg.data, args.split)
    report = verify_data(cfg, args.split, out_dir=args.out)
    for block in report.blocks:
        print(block)
    print(report.verdict)
    return report.exit_code(strict=args.strict)


def _verify_mmt(d, which: str) -> int:
    """MMT feature release: every listed id's .h5 present and readable (captions, expert shapes)."""
    from vidbench.data.mmt import MmtFileError, get_preset, h5_path, missing_release_message, read_mmt_h5, split_ids

    missing = missing_release_message(d.root, d.dataset, d.mmt.cut)
    if missing is not None:
        print(missing)
        return 1
    preset = get_preset(d.dataset, d.mmt.cut)
    splits = {"train": preset.train_split, "test": preset.test_split}
    bad = 0
    for split in splits.values() if which == "both" else [splits[which]]:
        ids = split_ids(d.root, preset, split)
        problems = []
        for vid in ids:
            try:
                read_mmt_h5(h5_path(d.root, vid), preset.expert_dims, load_features=False)
            except MmtFileError as err:
                problems.append(str(err))
        print(f"{preset.name} {split}: {len(ids)} listed, {len(problems)} missing or malformed")
        for line in problems[:10]:
            print(f"  - {line}")
        bad += len(problems)
    return 1 if bad else 0


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
    rows = run_suite(
        load_suite(args.suite),
        overrides=overrides,
        seeds=args.seeds,
        clip=args.clip,
        runs_dir=args.runs,
        in_process=args.in_process,
    )
    report = aggregate(Path(args.runs), Path(args.out))
    print(format_report(report))
    failed = [r for r in rows if r[2].startswith("failed")]
    for recipe, seed, status in failed:
        print(f"FAILED: {recipe} seed {seed}: {status}", file=sys.stderr)
    return 1 if failed else 0


def cmd_list(args: argparse.Namespace) -> int:
    from vidbench.config import RECIPES_DIR, list_recipes

    if getattr(args, "methods", False):
        from vidbench.methods.registry import available_methods

        for name, source, problem in available_methods():  # a broken plugin is listed, never raised
            print(f"{name}: {source}" + (f"\n  BROKEN: {problem}" if problem else ""))
        return 0
    for path in list_recipes():
        print(path.relative_to(RECIPES_DIR).with_suffix(""))
    return 0


DESCRIPTION = (
    "vidbench trains and evaluates text-to-video retrieval methods (CLIP4Clip, DRL, EERCF, HCQ, or your own "
    "plugin) on the same data, protocols and metrics, and reports accuracy next to cost in one leaderboard."
)
EPILOG = (
    "Start with `vidbench list`, then `vidbench fit RECIPE --test` and `vidbench aggregate`; "
    "`vidbench COMMAND --help` explains each command."
)


def cmd_encode(args: argparse.Namespace) -> int:
    from vidbench.serve.encode import encode

    manifest = encode(_compose(args), args.videos, args.out, ckpt=args.ckpt, shard_size=args.shard_size)
    if manifest.get("complete"):
        c = manifest["counts"]
        print(
            f"{args.out}: {c['encoded']} videos encoded, {c['failed']} failed (listed in videos.parquet), "
            f"{c['skipped_as_done']} already done; {manifest['seconds']} s"
            + (f", {manifest['clips_per_s']} clips/s" if manifest.get("clips_per_s") else "")
        )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    import json

    from vidbench.serve.search import Searcher, read_queries

    if not args.query and not args.queries:
        raise VidbenchError('give a query ("a dog catches a frisbee") or --queries FILE')
    queries = ([args.query] if args.query else []) + (read_queries(args.queries) if args.queries else [])
    searcher = Searcher(args.store, protocol=args.protocol, index=args.index, ckpt=args.ckpt)
    results = searcher.search(queries, k=args.k, batch=args.batch)
    for qi, res in enumerate(results):
        if args.json:
            print(json.dumps(res.as_dict()))
        elif args.queries:
            for h in res.hits:
                print(f"{qi}\t{res.query}\t{h.rank}\t{h.video_id}\t{h.path}\t{h.score:.6f}")
        else:
            print(f'query: "{res.query}"  ({res.ms:.1f} ms/query, protocol {args.protocol}'
                  f"{', index ' + args.index if args.index else ''})")
            for h in res.hits:
                print(f"{h.rank:4d}  {h.score:9.4f}  {h.video_id}  {h.path}")
    if args.html:
        from vidbench.serve.html import write_page

        page = write_page(results, args.html, f"vidbench search: {searcher.manifest['recipe']}")
        print(f"wrote {page}", file=sys.stderr)
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from vidbench.serve.index import build_index

    path = build_index(args.store, args.kind, nlist=args.nlist, nprobe=args.nprobe, m=args.m)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB); search it: vidbench search {args.store} "
          f'"a query" --index {args.kind}')
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidbench", description=DESCRIPTION, epilog=EPILOG)
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

    p = sub.add_parser(
        "verify-data",
        help="manifest of present / missing / undecodable videos per split",
        description="Per split: the folder searched, the file names expected, the counts, the first missing ids, "
        "caption truncation counts, the manifest path and the fix. Exit status: 0 when the test split is "
        "complete (missing training videos are skipped and counted by fit), 1 when a video of the test split is "
        "missing or undecodable (or any video, with --strict), 2 when a split's annotations cannot be read.",
    )
    _recipe_args(p)
    p.add_argument("--split", choices=["train", "test", "both"], default="both")
    p.add_argument(
        "--out", help="manifest folder (default: <paths.cache_dir>/manifests/<dataset>-<hash of the data root>)"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when any video of any split is missing or undecodable")
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
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run every fit+test in this process (single-device CPU runs: no per-run start-up); default: one "
        "process per run",
    )
    p.set_defaults(func=cmd_reproduce)

    from vidbench.slurm import add_run_task_parser, add_submit_parser  # light: no Lightning import

    add_submit_parser(sub)
    add_run_task_parser(sub)

    p = sub.add_parser("encode", help="encode a folder or list of videos into a searchable store")
    _recipe_args(p)
    p.add_argument("--ckpt", help="vidbench or reference checkpoint (default: the untrained backbone)")
    p.add_argument("--videos", required=True, help="a folder (searched recursively) or a .csv/.txt list of paths")
    p.add_argument("--out", required=True, help="the store folder (resumed when it exists)")
    p.add_argument("--shard-size", type=int, default=512, help="videos per shard file (the resume granularity)")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("search", help="search a store by text with the method's own test-time scoring")
    p.add_argument("store")
    p.add_argument("query", nargs="?", help="the text query")
    p.add_argument("-k", type=int, default=10, help="results per query")
    p.add_argument("--queries", help="a file of queries, one per line (TSV out, or JSONL with --json)")
    p.add_argument("--json", action="store_true", help="one JSON object per query")
    p.add_argument("--html", help="write a self-contained HTML page of the results with frame strips")
    p.add_argument("--protocol", default="base", help="the method's test protocol to score with (default base)")
    p.add_argument("--index", choices=["flat", "ivf", "pq", "fastscan"], help="use an index built by `vidbench index`")
    p.add_argument("--ckpt", help="the store's checkpoint, when it moved since encoding")
    p.add_argument("--batch", type=int, default=64, help="queries encoded and scored together")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("index", help="build a FAISS serving index over a store")
    p.add_argument("store")
    p.add_argument("--kind", required=True, choices=["flat", "ivf", "pq", "fastscan"])
    p.add_argument("--nlist", type=int, help="IVF lists (default 4 sqrt(N))")
    p.add_argument("--nprobe", type=int, default=16, help="IVF lists probed per query")
    p.add_argument("--m", type=int, help="PQ sub-quantisers (default: 64 or the largest divisor of the dim)")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("list", help="list the recipes (--methods: the registered methods and plugins)")
    p.add_argument(
        "--methods",
        action="store_true",
        help="list the methods instead: built-ins, installed plugins (entry-point group vidbench.methods) and "
        "any that failed to load, with the reason",
    )
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    # faiss's loader reports each CPU instruction set it could not load at INFO (three tracebacks per run)
    logging.getLogger("faiss").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return args.func(args)
    except VidbenchError as exc:
        print(f"vidbench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
