"""Recipe composition, validation and hashing.

A recipe is one YAML file per paper table cell. Its ``defaults`` list names parts under ``recipes/``
(``base/``, ``data/``, ``method/``, ``trainer/``) that are merged in order, then the recipe's own keys,
then command-line dotlist overrides (``optim.lr=3e-4``). The result is checked against typed schemas:
an unknown key or a wrong type is an error that names the key. The ``method`` section is checked against
the schema of the method it names, so a DRL key in a CLIP4Clip recipe is caught too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    mmt: MmtDataConfig | None = None  # set: MMT expert features instead of videos (HCQ as published)


@dataclass
class ModelConfig:
    clip: str = "openai/clip-vit-base-patch32"  # HF name, local folder, or "tiny"
    tokenizer: str | None = None  # default: same as clip
    freeze_layer_num: int = 0  # CLIP4Clip rule; -1 trains everything
    attn_implementation: str = "sdpa"
    init_from: str | None = None  # fit starts from these weights (vidbench, converted or reference checkpoint)


@dataclass
class OptimConfig:
    optimizer: str = "adamw"  # adamw | bertadam (the reference optimiser, see methods/optim.py)
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
class Clip4ClipMethod:
    name: str = "clip4clip"
    sim_header: str = "meanP"  # meanP | seqTransf
    temporal_layers: int = 4


@dataclass
class DRLMethod:
    name: str = "drl"
    interaction: str = "wti"  # dp | ti | wti
    agg_module: str = "seqTransf"  # none | seqTransf
    temporal_layers: int = 4
    wti_arch: int = 2  # 1: Linear; 2: Linear-ReLU-Linear (published); 3: two hidden layers
    padding: str = "zero"  # zero: padded similarities are 0 inside the max (reference) | neg_inf
    cdcr: int = 3  # 0 off; 1 random token/frame pairs; 2 argmax pairs (TI); 3 weighted argmax pairs (WTI)
    cdcr_alpha1: float = 0.11  # diagonal weight (README main command; the script uses 0.14)
    cdcr_alpha2: float = 0.0  # off-diagonal weight (0 in every published config)
    cdcr_lambda: float = 0.001
    two_stage_k: int = 0  # >0: also report protocol two-stage@k (mean-pooled recall, TI/WTI re-rank of the top k)


@dataclass
class EercfRerankMix:
    """EERCF's test-time rerank mix (spec A.5; the reference hard-codes these, unlike its training mix)."""

    video: float = 0.5
    frame_weak: float = 0.8
    frame_tib: float = 0.2
    patch_weak: float = 0.2
    patch_tib: float = 0.0


@dataclass
class EercfMethod:
    name: str = "eercf"
    temporal_layers: int = 4  # seqTransf blocks (cross_num_hidden_layers)
    # training mix (spec A.4): L = weak * sym(weak mix) + strong * sym(strong mix) + pearson * L_intra
    video_weight: float = 0.5
    weakframe_weight: float = 0.5
    weakpatch_weight: float = 0.05
    strongframe_weight: float = 1.0
    strongpatch_weight: float = 0.0
    weak_loss_weight: float = 0.8
    strong_loss_weight: float = 0.2
    pearson_weight: float = 0.001  # cdcl_loss_weight
    pearson_diag: float = 0.14
    pearson_offdiag: float = 0.0
    pearson_video: float = 1.0  # (text, coarse video)
    pearson_frame: float = 1.0  # (text, frame TIB)
    pearson_patch: float = 0.0  # (text, patch TIB)
    frame_weak_temperature: float = 0.01
    patch_temperature: float = 0.01
    frame_tib_temperature: float = 0.1
    mask_padded_frames: bool = False  # False: padded frames enter the softmaxes (reference)
    rerank_k: int = 50  # two-stage: candidates recalled per text by the coarse score
    rerank_mix: EercfRerankMix = field(default_factory=EercfRerankMix)
    index_patches: bool = True  # keep patch features in the test index (needed by the patch rerank terms)


@dataclass
class HcqMethod:
    """HCQ head on CLIP features (spec methods-eercf-hcq.md Part B; Part D option b)."""

    name: str = "hcq"
    sim_header: str = "meanP"  # frames for the coarse level and GhostVLAD: meanP (CLIP frames) | seqTransf
    temporal_layers: int = 4
    fine_levels: int = 7  # L: GhostVLAD clusters, one fine level each
    ghost_clusters: int = 1
    vlad_mode: str = "reference"  # reference (ghost dropped before softmax, mask x logits) | textbook
    vlad_batch_norm: bool = True
    num_subspaces: int = 32  # M sub-codebooks per level (must divide the embedding size)
    num_codewords: int = 256  # K codewords per sub-codebook (<= 256: one byte per code)
    alpha: float = 1.0  # soft-code sharpness
    quantizer_batch_norm: bool = True  # BatchNorm1d(M) on the codeword similarities (soft codes only)
    temperature: float = 0.05  # AQ-CL tau (0.07 for ActivityNet)
    # loss and score: cls_weight * coarse + vlad_weight * mean over the L fine levels (the reference's
    # per-config pair: 0.125 / 0.875 for its L = 7 configs; L = 1: 2.0 / 2.0; L = 3: 1.3333 / 2.0;
    # L = 15: 1.0667 / 2.0; L = 31: 1.0323 / 2.0)
    cls_weight: float = 0.125
    vlad_weight: float = 0.875
    debias_prior: float = 0.0  # tau+ of the fine levels' debiased InfoNCE (0 in every reference config)
    code_loss_weight: float = 0.0  # soft-code InfoNCE term (0 in every reference config)
    pq_reg_loss_weight: float = 0.0  # sum_d (x_normalized - x_hat)^2 per row (0 in every reference config)
    smoothing: bool = True  # (1 - w_e) AQ-CL + w_e unquantised, w_e = cos(e pi / 2E)
    smoothing_epochs: int | None = None  # E; default trainer.max_epochs
    kmeans_iters: int = 10
    kmeans_stop: str = "all"  # all: run every iteration (what the reference effectively does) | converged
    kmeans_tol: float = 1e-5  # kmeans_stop=converged: stop a sub-codebook once MSE(old, new) <= tol
    kmeans_empty: str = "zero"  # zero (reference: dead codeword) | keep (previous codeword)
    kmeans_cache: int = 65536  # embeddings (text + video) cached per level per rank per epoch, uniform sample
    export_faiss: bool = True  # write <run_dir>/hcq_index.faiss for the test gallery
    eval_faiss: bool = False  # extra protocol "faiss": the test gallery searched through FAISS


@dataclass
class HcqMmtMethod(HcqMethod):
    """HCQ as published: MMT expert features + the MMT video transformer, BERT text (spec hcq-original.md).

    The HCQ head keys are HcqMethod's (``sim_header`` / ``temporal_layers`` do not apply here).
    """

    name: str = "hcq_mmt"
    bert: str = "bert-base-cased"  # hub id (local HF cache), local folder, or "tiny" (tests)
    tokenizer: str | None = None  # folder or hub id holding vocab.txt; default: bert
    text_dropout: float = 0.2  # text BERT hidden + attention dropout (0.25 for 1k-B and LSMDC)
    video_bert: str = "msrvtt"  # MMT video transformer config: msrvtt | lsmdc | activitynet | tiny
    video_dropout: float | None = None  # override the config's hidden + attention dropout
    lr_step_epochs: int = 1  # StepLR after every step_epochs epochs (ActivityNet: 2)
    lr_gamma: float = 0.95  # StepLR factor (ActivityNet: 0.85)


METHOD_SCHEMAS: dict[str, type] = {
    "clip4clip": Clip4ClipMethod,
    "drl": DRLMethod,
    "eercf": EercfMethod,
    "hcq": HcqMethod,
    "hcq_mmt": HcqMmtMethod,
}


def register_method_schema(name: str, schema: type) -> None:
    """Methods add their own config schema here (keeps config.py free of method imports)."""
    METHOD_SCHEMAS[name] = schema


@dataclass
class RootConfig:
    paths: PathsConfig = field(default_factory=PathsConfig)
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    method: Any = None  # validated against METHOD_SCHEMAS[method.name]
    slurm: SlurmConfig = field(default_factory=SlurmConfig)  # `vidbench submit` (vidbench/slurm.py)


_CHOICES = {
    "data.missing_policy_train": ("skip", "fail"),
    "data.missing_policy_test": ("skip", "fail"),
    "data.fps_mode": ("int", "exact", "stride"),
    "data.slice_framepos": (0, 1, 2),
    "optim.optimizer": ("adamw", "bertadam"),
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
        part_path = RECIPES_DIR / f"{part}.yaml"
        if not part_path.exists():
            raise ConfigError(f"{path}: defaults entry '{part}' not found (expected {part_path})")
        merged = OmegaConf.merge(merged, _compose_file(part_path, (*seen, path)))
    return OmegaConf.merge(merged, cfg)


def _key_error_message(exc: OmegaConfBaseException, where: str, prefix: str = "") -> str:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
    msg = str(exc).splitlines()[0]
    if key:
        return f"{where}: invalid key '{prefix}{key}': {msg}"
    return f"{where}: {msg}"


def _validate_choices(cfg: DictConfig) -> None:
    for dotted, choices in _CHOICES.items():
        value = OmegaConf.select(cfg, dotted)
        if value not in choices:
            raise ConfigError(f"config key '{dotted}' = {value!r}; choose one of {list(choices)}")


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
    method_raw = raw.pop("method", None)
    if method_raw is None or "name" not in method_raw:
        raise ConfigError(f"{path}: the recipe needs a 'method' section with a 'name' ({sorted(METHOD_SCHEMAS)})")
    method_name = method_raw["name"]
    if method_name not in METHOD_SCHEMAS:
        raise ConfigError(f"{path}: method.name '{method_name}' is unknown; choose one of {sorted(METHOD_SCHEMAS)}")
    schema = OmegaConf.structured(RootConfig)
    try:
        cfg = OmegaConf.merge(schema, raw)
    except OmegaConfBaseException as exc:
        raise ConfigError(_key_error_message(exc, str(path))) from exc
    try:
        method_cfg = OmegaConf.merge(OmegaConf.structured(METHOD_SCHEMAS[method_name]), method_raw)
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
_LATER_KEYS_AT_DEFAULT = {"data.mmt": None, "eval.select_on_test": False}


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
