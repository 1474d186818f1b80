"""Recipe composition, validation and hashing.

A recipe is one YAML file per paper table cell. Its ``defaults`` list names parts under ``recipes/``
(``base/``, ``data/``, ``method/``, ``trainer/``) that are merged in order, then the recipe's own keys,
then command-line dotlist overrides (``optim.lr=3e-4``). The result is checked against typed schemas:
an unknown key or a wrong type is an error that names the key. The ``method`` section is checked against
the schema its method registered beside its class (:mod:`vidbench.methods.registry`), so a DRL key in a
CLIP4Clip recipe is caught too, and a plugin's keys are checked the same way.

A recipe may live anywhere (``vidbench fit path/to/my_recipe.yaml``): its ``defaults`` entries are looked
up beside it first (``<recipe folder>/<part>.yaml``), then among the repository's parts under ``recipes/``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vidbench.errors import ConfigError
from vidbench.locations import default_cache_root

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


@dataclass
class PathsConfig:
    data_root: str = "data"  # real datasets live in <data_root>/<dataset>/ (see README)
    synth_root: str = "data/synth"  # where `vidbench synth` writes the synthetic benchmark
    runs_dir: str = "runs"  # run directories: <runs_dir>/<recipe>/seed<k>/
    # Frame caches and data manifests; never inside a dataset root (those are often read-only). $VIDBENCH_CACHE
    # when set, else ~/.cache/vidbench. Point several users at one folder to share a cache (keyed by content).
    cache_dir: str | None = None  # None: see default_cache_root()


@dataclass
class RunConfig:
    name: str | None = None  # defaults to the recipe file's stem
    seed: int = 0


@dataclass
class MmtDataConfig:
    """HCQ's original inputs: the MMT feature release (vidbench/data/mmt). ``data.root`` is the extracted
    dataset folder holding ``symlinked-feats/`` and ``vid_feat_files/``."""

    cut: str = "jsfusion"  # msrvtt: jsfusion (1k-A) | miech (1k-B) | full; lsmdc: full; activitynet: val1
    samples_per_epoch: int | None = 32000  # training draws per epoch (video i % n); None: one per video
    max_tokens: int | None = None  # T per expert; default: the preset's (30, ActivityNet 100)
    max_words: int | None = None  # W words then word-pieces per query; default: the preset's
    scan_workers: int = 0  # processes for the up-front scan of the h5 files


@dataclass
class CustomDataConfig:
    """``data.dataset: custom``: your own annotation files (vidbench/data/datasets/custom.py)."""

    name: str = "custom"  # the dataset's name in result.json and on the leaderboard
    annotations: str = "{split}.csv"  # under data.root; {split} -> the split; .csv, .tsv or .jsonl
    captions: str = "multi"  # multi: each row is a query (multi-caption) | paragraph: a clip's rows joined


@dataclass
class DataConfig:
    dataset: str = "msrvtt"
    root: str = "${paths.data_root}/msrvtt"
    video_root: str | None = None  # default: search videos under root
    train_split: str = "train-9k"
    test_split: str = "test-1ka"
    max_words: int = 32
    max_frames: int = 12
    framerate: float = 1.0
    slice_framepos: int = 2  # 0 head, 1 tail, 2 uniform (every published script)
    fps_mode: str = "int"  # int: CLIP4Clip's cv2 rule (fps truncated); exact; stride: DRL's decord rule
    image_size: int | None = None  # default: the backbone's input size
    expand_captions: bool = True  # every (video, caption) pair is a training sample
    batch_size: int = 128  # global batch; divided by the world size
    eval_batch_size: int = 64  # per process
    num_workers: int = 4
    cache: bool = True  # decode each clip once into a memory-mapped frame cache
    cache_dir: str | None = "${paths.cache_dir}/frames"  # frame caches, one folder per content key
    missing_policy_train: str = "skip"  # skip | fail
    missing_policy_test: str = "fail"  # fail | skip (skips are counted in result.json)
    # The recipe trains on some test videos on purpose: the overlap control then reports "declared", not "fail".
    declare_overlap: bool = False
    mmt: MmtDataConfig | None = None  # set: MMT expert features instead of videos (HCQ as published)
    custom: CustomDataConfig | None = None  # set with dataset: custom (your own annotation files)


@dataclass
class ModelConfig:
    clip: str = "openai/clip-vit-base-patch32"  # HF name, local folder, or "tiny"
    tokenizer: str | None = None  # default: same as clip
    freeze_layer_num: int = 0  # CLIP4Clip rule; -1 trains everything
    attn_implementation: str = "sdpa"
    init_from: str | None = None  # fit starts from these weights (vidbench, converted or reference checkpoint)


@dataclass
class OptimConfig:
    optimizer: str = "adamw"  # adamw | bertadam (CLIP4Clip/DRL/EERCF reference) | adam (HCQ); see methods/optim.py
    lr: float = 1e-4
    coef_lr: float = 1e-3  # CLIP parameters train at lr * coef_lr
    weight_decay: float = 0.2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_proportion: float = 0.1
    schedule: str = "warmup_cosine"  # warmup_cosine (reference formula) | constant
    grad_clip: float = 1.0  # global norm; 0 disables


@dataclass
class TrainerConfig:
    max_epochs: int = 5
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed
    gather_grad: str = "exact"  # exact: DDP grads equal the single-process grads; reference: 1/W on the encoders
    # Gradient caching (vidbench/methods/grad_cache.py): encoders run on chunks of this many samples, the loss on
    # the whole per-device batch, same gradients; null = off. Lowers activation memory, keeps the method.
    contrastive_chunk: int | None = None
    # > 1 changes a contrastive method (each micro-batch has fewer negatives): allowed, recorded as a deviation
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = 10
    limit_train_batches: Any = None
    stop_after_epochs: int | None = None  # end this invocation early (schedule unchanged); rerun resumes
    deterministic: bool = False  # torch.use_deterministic_algorithms: needed for bit-exact GPU reruns (slower)
    # Intra-op CPU threads. CPU reductions and matmuls split their work by thread count, so the same seed gives
    # different weights under a different count (torch otherwise picks it from the machine and OMP_NUM_THREADS).
    # None keeps torch's choice; the count used is recorded in result.json either way.
    cpu_threads: int | None = None
    progress_bar: bool | None = None  # None: a bar when stdout is a terminal, one line per epoch otherwise


@dataclass
class EvalConfig:
    dsl: bool = False  # also report dual-softmax post-processing as its own protocol
    dsl_temperature: float = 100.0
    strict: bool = True  # also record the strict metric variant
    budget_mb: int = 1024  # memory budget for one block of the similarity matrix
    efficiency: bool = True  # FLOPs, bytes per video, ms per query
    text_chunk: int | None = None
    video_chunk: int | None = None
    # Also evaluate the test split after every epoch and keep the epoch with the best t2v geometric mean of
    # R@1/5/10 (the HCQ reference's pick, an oracle: chosen on the test split); reported beside the last
    # epoch as protocols "<name>@best-on-test".
    select_on_test: bool = False
    # Post-processing families reported as their own set-apart protocols (vidbench/eval/postprocess.py).
    sinkhorn: bool = False  # transductive: Sinkhorn normalisation of the whole test score matrix
    sinkhorn_temperature: float = 100.0
    sinkhorn_iterations: int = 20
    qbnorm: bool = False  # QB-Norm (dynamic inverted softmax) with a bank of training captions: extra data
    qbnorm_bank: int | None = 5000  # captions drawn from the training split; null = every training caption
    qbnorm_beta: float = 20.0  # the authors' release default
    qbnorm_k: int = 1  # the authors' release default
    shuffle_control: bool = True  # score with captions permuted across videos: must fall to chance R@1


@dataclass
class SlurmConfig:
    """Resources and requeue policy for `vidbench submit`; every key can be overridden on its command line."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = "24:00:00"  # sbatch --time: minutes, [D-]HH:MM:SS, ...
    nodes: int = 1
    gpus_per_node: int = 0  # --gres=gpu:N
    ntasks_per_node: int | None = None  # one process per device; default: gpus_per_node, or 1 on CPU
    cpus_per_task: int = 8
    mem: str | None = None  # per node, e.g. "64G"
    signal_lead_s: int = 90  # --signal=USR1@<s>: warn this long before the time limit
    requeue_at: str = "batch"  # batch: checkpoint at the next batch; epoch: finish the epoch (exact resume)
    max_parallel: int | None = None  # array throttle (--array=...%N)
    extra: list[str] = field(default_factory=list)  # more directives, e.g. ["--constraint=a100"]
    setup: list[str] = field(default_factory=list)  # shell lines run before srun (module load ...)


@dataclass
class RootConfig:
    paths: PathsConfig = field(default_factory=PathsConfig)
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    method: Any = None  # validated against the schema its method registered (vidbench/methods/registry.py)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)  # `vidbench submit` (vidbench/slurm.py)


_CHOICES = {
    "data.missing_policy_train": ("skip", "fail"),
    "data.missing_policy_test": ("skip", "fail"),
    "data.fps_mode": ("int", "exact", "stride"),
    "data.slice_framepos": (0, 1, 2),
    "optim.optimizer": ("adamw", "bertadam", "adam"),
    "optim.schedule": ("warmup_cosine", "constant"),
    "trainer.precision": ("32-true", "32", "bf16-mixed", "16-mixed"),
    "trainer.gather_grad": ("exact", "reference"),
    "slurm.requeue_at": ("batch", "epoch"),
}


def find_recipe(name_or_path: str) -> Path:
    """Resolve a recipe given as a path or as a name searched under recipes/ (not in the parts folders)."""
    p = Path(name_or_path)
    if p.suffix in {".yaml", ".yml"} and p.exists():
        return p
    stem = p.stem if p.suffix in {".yaml", ".yml"} else p.name
    hits = [
        h
        for h in RECIPES_DIR.rglob(f"{stem}.yaml")
        if not ({"base", "data", "method", "trainer", "suites"} & set(h.relative_to(RECIPES_DIR).parts[:-1]))
    ]
    if not hits:
        raise ConfigError(
            f"recipe '{name_or_path}' not found (looked for the file and for {stem}.yaml under {RECIPES_DIR}); "
            "run `vidbench list` to see the recipes"
        )
    if len(hits) > 1:
        raise ConfigError(f"recipe name '{stem}' is ambiguous: {[str(h) for h in hits]}")
    return hits[0]


def list_recipes() -> list[Path]:
    parts = {"base", "data", "method", "trainer", "suites"}
    return sorted(p for p in RECIPES_DIR.rglob("*.yaml") if not (parts & set(p.relative_to(RECIPES_DIR).parts[:-1])))


def _load_yaml(path: Path) -> DictConfig:
    try:
        cfg = OmegaConf.load(path)
    except (OSError, OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(f"{path}: cannot parse YAML: {exc}") from exc
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: a recipe must be a mapping at the top level")
    return cfg


def _compose_file(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    if path in seen:
        raise ConfigError(f"{path}: circular defaults via {[str(s) for s in seen]}")
    cfg = _load_yaml(path)
    defaults = cfg.pop("defaults", []) or []
    if not isinstance(defaults, ListConfig | list):
        raise ConfigError(f"{path}: 'defaults' must be a list of part names like 'data/msrvtt-9k_1ka'")
    merged = OmegaConf.create({})
    for part in defaults:
        local = path.parent / f"{part}.yaml"
        part_path = local if local.exists() else RECIPES_DIR / f"{part}.yaml"
        if not part_path.exists():
            raise ConfigError(
                f"{path}: defaults entry '{part}' not found (expected {local} or {RECIPES_DIR / f'{part}.yaml'})"
            )
        merged = OmegaConf.merge(merged, _compose_file(part_path, (*seen, path)))
    return OmegaConf.merge(merged, cfg)


def _key_line(path: Path, dotted: str, seen: tuple[Path, ...] = ()) -> str | None:
    """``file:line`` where ``dotted`` (e.g. ``method.bogus``) is written: the recipe, else its defaults parts."""
    *parents, leaf = dotted.split(".")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    depth, indent = 0, -1
    for i, line in enumerate(lines, start=1):
        stripped = line.split("#", 1)[0].rstrip()
        if not stripped.strip():
            continue
        pad = len(stripped) - len(stripped.lstrip())
        while depth and pad <= indent:  # left the section we were inside
            depth, indent = 0, -1
        name = stripped.strip().split(":", 1)[0].strip()
        if depth < len(parents) and name == parents[depth] and stripped.endswith(":") and pad > indent:
            depth, indent = depth + 1, pad
        elif depth == len(parents) and name == leaf and ":" in stripped and pad > indent:
            return f"{path}:{i}"
    try:
        defaults = _load_yaml(path).get("defaults") or []
    except ConfigError:
        return None
    for part in reversed(list(defaults)):  # later parts override earlier ones
        local = path.parent / f"{part}.yaml"
        part_path = local if local.exists() else RECIPES_DIR / f"{part}.yaml"
        if part_path.exists() and part_path not in seen:
            hit = _key_line(part_path, dotted, (*seen, path))
            if hit:
                return hit
    return None


def _key_error_message(exc: OmegaConfBaseException, where: str, prefix: str = "") -> str:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
    msg = str(exc).splitlines()[0]
    if key:
        line = _key_line(Path(where), f"{prefix}{key}") if where.endswith((".yaml", ".yml")) else None
        return f"{line or where}: invalid key '{prefix}{key}': {msg}"
    return f"{where}: {msg}"


def _validate_choices(cfg: DictConfig) -> None:
    for dotted, choices in _CHOICES.items():
        value = OmegaConf.select(cfg, dotted)
        if value not in choices:
            raise ConfigError(f"config key '{dotted}' = {value!r}; choose one of {list(choices)}")
    chunk = cfg.trainer.contrastive_chunk
    if chunk is not None and chunk < 1:
        raise ConfigError(f"trainer.contrastive_chunk = {chunk}: samples per encoder chunk, >= 1 (or null: off)")
    if cfg.trainer.accumulate_grad_batches < 1:
        raise ConfigError(f"trainer.accumulate_grad_batches = {cfg.trainer.accumulate_grad_batches}: must be >= 1")


def _expand_user_paths(cfg: DictConfig) -> None:
    """``~`` in the path keys becomes the home folder, so config.yaml records where files really went."""
    for dotted in (
        "paths.data_root",
        "paths.runs_dir",
        "paths.cache_dir",
        "data.root",
        "data.video_root",
        "data.cache_dir",
    ):
        value = OmegaConf.select(cfg, dotted)
        if isinstance(value, str) and value.startswith("~"):
            OmegaConf.update(cfg, dotted, str(Path(value).expanduser()), merge=False)


def compose(recipe: str | Path, overrides: list[str] | None = None) -> DictConfig:
    """Compose, validate and resolve a recipe; returns a read-only DictConfig."""
    path = find_recipe(str(recipe))
    raw = _compose_file(path)
    if overrides:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override '{item}' must look like key=value (e.g. optim.lr=3e-4)")
        try:
            raw = OmegaConf.merge(raw, OmegaConf.from_dotlist(list(overrides)))
        except OmegaConfBaseException as exc:
            raise ConfigError(_key_error_message(exc, "override")) from exc
        except yaml.YAMLError as exc:  # a value YAML reads as syntax, e.g. {split}.csv
            raise ConfigError(
                f"override value in {list(overrides)} is not valid YAML ({str(exc).splitlines()[0]}); quote it, "
                "e.g. \"data.custom.annotations='{split}.csv'\""
            ) from exc
    method_raw = raw.pop("method", None)
    from vidbench.methods.registry import method_schema  # methods register their own schemas

    if method_raw is None or "name" not in method_raw:
        raise ConfigError(
            f"{path}: the recipe needs a 'method' section with a 'name' (a built-in such as clip4clip, an "
            "installed plugin's name, or package.module:Class; `vidbench list --methods` shows them)"
        )
    method_name = str(method_raw["name"])
    try:
        method_schema_cls = method_schema(method_name, search_dirs=[path.parent])
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    schema = OmegaConf.structured(RootConfig)
    try:
        cfg = OmegaConf.merge(schema, raw)
    except OmegaConfBaseException as exc:
        raise ConfigError(_key_error_message(exc, str(path))) from exc
    try:
        method_cfg = OmegaConf.merge(OmegaConf.structured(method_schema_cls), method_raw)
    except OmegaConfBaseException as exc:
        raise ConfigError(_key_error_message(exc, str(path), prefix="method.")) from exc
    OmegaConf.set_struct(cfg, False)
    cfg.method = method_cfg
    if not cfg.paths.cache_dir:
        cfg.paths.cache_dir = default_cache_root()
    if cfg.run.name is None:
        cfg.run.name = path.stem
    try:
        resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    except OmegaConfBaseException as exc:
        raise ConfigError(_key_error_message(exc, str(path))) from exc
    _validate_choices(resolved)
    if not resolved.data.cache_dir:
        resolved.data.cache_dir = f"{resolved.paths.cache_dir}/frames"
    _expand_user_paths(resolved)
    OmegaConf.set_readonly(resolved, True)
    return resolved


# Where things are and how a job is scheduled, not what is computed: left out of the config hash, so moving
# a dataset or submitting to another partition keeps the hash of an experiment.
_OPERATIONAL_KEYS = (
    "paths",
    "slurm",
    "data.root",
    "data.video_root",
    "data.cache_dir",
    "data.mmt.scan_workers",
    "data.num_workers",
    "trainer.progress_bar",
    "trainer.stop_after_epochs",
)


# Keys added after results were first published: left out of the hash while at these values, so a config
# that does not use them keeps the hash it always had.
_LATER_KEYS_AT_DEFAULT = {
    "data.mmt": None,
    "data.custom": None,
    "eval.select_on_test": False,
    "data.declare_overlap": False,
    "eval.sinkhorn": False,
    "eval.sinkhorn_temperature": 100.0,
    "eval.sinkhorn_iterations": 20,
    "eval.qbnorm": False,
    "eval.qbnorm_bank": 5000,
    "eval.qbnorm_beta": 20.0,
    "eval.qbnorm_k": 1,
    "eval.shuffle_control": True,
    "trainer.contrastive_chunk": None,
    "trainer.accumulate_grad_batches": 1,
}


def config_hash(cfg: DictConfig) -> str:
    """sha256 of the resolved config without operational keys, stable under key order."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for dotted, default in _LATER_KEYS_AT_DEFAULT.items():
        section, leaf = dotted.split(".")
        node = data.get(section)
        if isinstance(node, dict) and leaf in node and node[leaf] == default:
            node.pop(leaf)
    for dotted in _OPERATIONAL_KEYS:
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    blob = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def run_dir(cfg: DictConfig) -> Path:
    """Deterministic run directory: a requeued or repeated job finds its own checkpoint."""
    return Path(cfg.paths.runs_dir) / cfg.run.name / f"seed{cfg.run.seed}"
