"""One training step of every paper recipe at its real shapes: random ViT-B CLIP, the recipe's frames and words.

``make rehearsal`` runs it (marked ``rehearsal``: kept out of ``make test``). Each case builds the recipe's
method with a random CLIP at the real widths (``model.clip=random-vitb32`` or ``random-vitb16``, as the recipe
names), makes a batch of real-shaped inputs (uint8 frames ``[B, T, 3, 224, 224]`` with a frame mask whose valid
lengths vary, token ids ``[B, max_words]`` with varying lengths) and runs the training step's loss (encode,
gather, every loss term) and its backward, checking the loss is finite, every trainable parameter that the
loss reaches gets a finite gradient, and the padded frames change nothing. Then the test-time path of the same
batch: encode, score with every protocol, a finite ``[B, B]`` matrix each.

Recipes that share every shape and head setting (the same method on another dataset at the same frames) are
one case. The batch is ``VIDBENCH_REHEARSAL_BATCH`` (default 8) but capped on CPU by the frames x patches
the step would hold (``_cpu_batch``) so that a case fits this machine's memory; on a GPU the variable sets it.
The HCQ-on-MMT recipes (expert features, not CLIP) are out of scope here: their shapes are tested in
tests/test_hcq_mmt.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vidbench.config import compose
from vidbench.methods import build_method

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.rehearsal


def _paper_recipes() -> list[str]:
    out = []
    for path in sorted((REPO / "recipes").glob("*/*.yaml")):
        if path.parent.name in ("base", "data", "method", "trainer", "suites", "hcq-mmt"):
            continue
        if "_tiny_" in path.stem:
            continue
        out.append(path.stem)
    return out


def _backbone(clip: str) -> str:
    return "random-vitb16" if "16" in str(clip) else "random-vitb32"


def _cases() -> list[pytest.param]:
    """One case per distinct (method settings, model settings, backbone, frames, words)."""
    seen: dict[str, list[str]] = {}
    for recipe in _paper_recipes():
        cfg = compose(recipe, [])
        model = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k not in ("clip", "init_from")}
        key = repr(
            (
                cfg.method.get("name") if "method" in cfg else None,
                OmegaConf.to_container(cfg.method) if "method" in cfg else None,
                model,
                _backbone(cfg.model.clip),
                cfg.data.max_frames,
                cfg.data.max_words,
            )
        )
        seen.setdefault(key, []).append(recipe)
    return [pytest.param(rs[0], id=rs[0], marks=()) for rs in seen.values()]


CASES = _cases()


def _cpu_batch(backbone: str, frames: int) -> int:
    """The batch for this machine: ``VIDBENCH_REHEARSAL_BATCH`` when set (a GPU box, a big CPU), else 8 clips
    capped so the step's activations stay near those of 8 clips x 12 frames at ViT-B/32 (~3 GiB), at least 2."""
    if os.environ.get("VIDBENCH_REHEARSAL_BATCH"):
        return int(os.environ["VIDBENCH_REHEARSAL_BATCH"])
    tokens = 197 if backbone == "random-vitb16" else 50
    return max(2, min(8, 96 * 50 // (frames * tokens)))


def _activation_gib(backbone: str, frames: int, batch: int) -> float:
    """Rough activation memory of the vision tower's backward: ~48 KiB per token per layer (fp32, ViT-B)."""
    tokens = 197 if backbone == "random-vitb16" else 50
    return batch * frames * tokens * 12 * 48 * 1024 / 2**30


CPU_LIMIT_GIB = float(os.environ.get("VIDBENCH_REHEARSAL_MAX_GIB", "8"))


def _batch(cfg, b: int, vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    t, w = int(cfg.data.max_frames), int(cfg.data.max_words)
    lens = torch.linspace(max(1, t // 4), t, b).round().long()  # from a quarter of the frames to all of them
    lens[1] = max(1, t - 1)  # the second clip one frame short of full: the eval check below sees a padded one
    vmask = (torch.arange(t)[None] < lens[:, None]).long()
    video = torch.randint(0, 256, (b, t, 3, 224, 224), generator=g, dtype=torch.uint8)
    video[vmask == 0] = 0
    wl = torch.linspace(3, w, b).round().long()
    amask = (torch.arange(w)[None] < wl[:, None]).long()
    ids = torch.randint(1, vocab - 2, (b, w), generator=g) * amask
    ids[:, 0] = vocab - 2
    ids[torch.arange(b), wl - 1] = vocab - 1
    return {"input_ids": ids, "attention_mask": amask, "video": video, "video_mask": vmask, "index": torch.arange(b)}


@pytest.mark.parametrize("recipe", CASES)
def test_one_training_step_at_real_shapes(recipe: str) -> None:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    cfg0 = compose(recipe, [])
    backbone = _backbone(cfg0.model.clip)
    cfg = compose(recipe, [f"model.clip={backbone}", "model.tokenizer=tiny", "eval.efficiency=false"])
    frames = int(cfg.data.max_frames)
    b = _cpu_batch(backbone, frames)
    need = _activation_gib(backbone, frames, b)
    if need > CPU_LIMIT_GIB:
        pytest.skip(
            f"{recipe}: {b} clips x {frames} frames at {backbone} need ~{need:.0f} GiB of activations, over "
            f"VIDBENCH_REHEARSAL_MAX_GIB={CPU_LIMIT_GIB:g}; run it where that much memory is free (a GPU box)"
        )
    torch.manual_seed(0)
    method = build_method(cfg)
    batch = _batch(cfg, b, method.clip.vocab_size)
    method.train()
    terms = method.global_loss_terms(batch)
    assert terms, recipe
    loss = torch.stack(list(terms.values())).sum()
    assert torch.isfinite(loss), {k: float(v) for k, v in terms.items()}
    loss.backward()
    grads = [(n, p.grad) for n, p in method.named_parameters() if p.requires_grad and p.grad is not None]
    assert grads, f"{recipe}: no parameter got a gradient"
    bad = [n for n, gr in grads if not torch.isfinite(gr).all()]
    assert not bad, f"{recipe}: non-finite gradients in {bad[:5]}"
    reached = {n for n, _ in grads}
    assert any(n.startswith("clip.model.vision_model") for n in reached), f"{recipe}: the frames got no gradient"
    assert any(n.startswith("clip.model.text_model") for n in reached), f"{recipe}: the text got no gradient"

    method.eval()
    batch = {k: v[:2] for k, v in batch.items()}  # the test-time path on two clips (shortest and a longer one)
    with torch.no_grad():
        text = method.encode_text_batch(batch)
        video = method.encode_video_batch(batch)
        # padded frames change nothing: perturb them and encode again
        noisy = dict(batch, video=batch["video"].clone())
        noisy["video"][batch["video_mask"] == 0] = 255
        again = method.encode_video_batch(noisy)
        for key, value in video.items():
            assert torch.allclose(value.float(), again[key].float(), atol=1e-5), f"{recipe}: padding leaks into {key}"
        for proto in method.protocols(text, video):
            sim = proto.score(text, video)
            assert sim.shape == (batch["input_ids"].shape[0], batch["video"].shape[0]), (recipe, proto.name)
            assert torch.isfinite(sim).all(), (recipe, proto.name)
