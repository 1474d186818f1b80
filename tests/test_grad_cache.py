"""Gradient caching (``trainer.contrastive_chunk``) gives the exact full-batch gradient, per method, in float64.

Two statements, each to 1e-10 for chunks of 1, 3 and B/2 samples:

- dropout off: the chunked step's parameter gradients equal the unchunked step's (``global_loss_terms``);
- dropout on (injected after every CLIP MLP and attention, seqTransf included): they equal the gradient of
  the same sampled loss by full autograd, the encoders run chunk by chunk with autograd and the loss
  backpropagated once. Dropout draws depend on the shape they are drawn for, so no chunking can reproduce
  the masks an unchunked batch would draw; what caching must (and does) get right is replaying its own
  masks in the second pass. The tests also show the dropout is live (another seed changes the gradient).

And under 2 gloo processes with torch's DistributedDataParallel around the step (so the inner backward
passes run inside DDP's forward, as under Lightning): the averaged gradient equals unchunked DDP's (dropout
off; that one equals a single process on the whole batch, test_ddp_gradients) and the all-reduced per-rank
autograd reference (dropout on). The default run checks DRL (WTI) and HCQ; the rehearsal every method.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from tests.distributed import run_processes
from tests.test_ddp_gradients import make_batch as make_batch_4f
from vidbench.config import compose
from vidbench.data.transforms import normalize_video
from vidbench.errors import ConfigError
from vidbench.methods import build_method
from vidbench.methods.grad_cache import (
    batch_coupling_layers,
    chunk_bounds,
    grad_cache_step,
    slice_batch,
    suggest_chunk,
)
from vidbench.models.quantization import ProductQuantizer

B = 8
DRL = "drl-wti-seqtransf-cdcr_tiny_8f_b64_synth-msrvtt"
METHODS: dict[str, tuple[str, list[str]]] = {
    "clip4clip-meanp": ("clip4clip-meanp_tiny_8f_b64_synth-msrvtt", []),
    "clip4clip-seqtransf": ("clip4clip-seqtransf_tiny_8f_b64_synth-msrvtt", []),
    "drl-wti-seqtransf-cdcr3": (DRL, []),
    "drl-ti-cdcr2": (DRL, ["method.interaction=ti", "method.cdcr=2", "method.cdcr_alpha2=0.06"]),
    "drl-dp-cdcr1": (DRL, ["method.interaction=dp", "method.cdcr=1", "method.agg_module=none"]),
    # every loss term: weak and strong frame and patch scores, all three Pearson pairs, padded frames masked
    "eercf-all-terms": (
        "eercf_tiny_8f_b64_synth-msrvtt",
        [
            "method.strongpatch_weight=0.1",
            "method.pearson_patch=1.0",
            "method.pearson_weight=0.5",
            "method.mask_padded_frames=true",
        ],
    ),
    # the head's BatchNorms (VLAD, quantisers) run on the whole local batch after the cache: HCQ on CLIP chunks
    "hcq-clip": ("hcq-clip_tiny_8f_b64_synth-msrvtt", ["method.code_loss_weight=0.3", "method.pq_reg_loss_weight=0.2"]),
}
CHUNKS = (1, 3, B // 2)
TOL = {"rtol": 1e-10, "atol": 1e-10}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny float64 models: one intra-op thread is several times faster than two (no thread handoffs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_batch() -> dict[str, torch.Tensor]:
    """test_ddp_gradients' batch (captions of varied length, a padded frame every third clip), 2 frames."""
    batch = {k: v[:, :2].clone() if k.startswith("video") else v for k, v in make_batch_4f().items()}
    batch["video_mask"][::3, -1] = 0
    return batch


def make_method(name: str, *, dropout: float) -> nn.Module:
    recipe, overrides = METHODS[name]
    torch.manual_seed(0)
    method = build_method(compose(recipe, overrides)).double().train()
    for module in method.modules():
        if isinstance(module, ProductQuantizer):  # HCQ quantises in float32 by design (codes independent of dtype)
            module.float()
    # float64 convolution backward is CPU's slowest kernel here: the patch embedding stays fixed (every other
    # encoder weight trains), which keeps the default test run short without touching what is tested
    method.clip.model.vision_model.embeddings.patch_embedding.requires_grad_(False)
    method.pixels = lambda video, mask: normalize_video(video, mask).double()  # type: ignore[method-assign]
    if dropout:
        add_dropout(method, dropout)
    return method


def add_dropout(method: nn.Module, p: float) -> None:
    """Dropout after every CLIP MLP and seqTransf block, and on CLIP's attention probabilities."""

    def hook(module: nn.Module, args, out):
        return F.dropout(out, p, module.training)

    for module in method.modules():
        kind = type(module).__name__
        if kind == "CLIPMLP" or (kind.endswith("Block") and "temporal" in _name(method, module)):
            module.register_forward_hook(hook)
        if kind == "CLIPAttention":
            module.dropout = p


def _name(root: nn.Module, module: nn.Module) -> str:
    return next(n for n, m in root.named_modules() if m is module)


def grads(method: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in method.named_parameters() if p.grad is not None}


def plain_grads(method, batch, seed: int = 7) -> dict[str, torch.Tensor]:
    method.zero_grad()
    torch.manual_seed(seed)
    torch.stack(list(method.global_loss_terms(batch).values())).sum().backward()
    return grads(method)


def reference_grads(method, batch, chunk: int, seed: int = 7) -> dict[str, torch.Tensor]:
    """Full autograd through the encoders run chunk by chunk (the draws gradient caching makes)."""
    method.zero_grad()
    torch.manual_seed(seed)
    text, video = [], []
    size = len(batch["input_ids"])
    for start, stop in chunk_bounds(size, chunk):
        t, v = method.encode_parts(slice_batch(batch, start, stop, size))
        text.append(t)
        video.append(v)
    cat = lambda parts: {k: torch.cat([p[k] for p in parts]) for k in parts[0]}  # noqa: E731
    torch.stack(list(method.local_loss_terms(cat(text), cat(video)).values())).sum().backward()
    return grads(method)


def chunked_grads(method, batch, chunk: int, seed: int = 7) -> dict[str, torch.Tensor]:
    method.zero_grad()
    torch.manual_seed(seed)
    terms, final = grad_cache_step(method, batch, chunk, backward=lambda t: t.backward())
    torch.testing.assert_close(final.detach(), torch.stack(list(terms.values())).sum())  # value = the loss
    final.backward()
    return grads(method)


def assert_same(got: dict, want: dict, what: str) -> None:
    assert set(got) == set(want), what
    encoder = 0
    for n, g in want.items():
        torch.testing.assert_close(got[n], g, **TOL, msg=f"{what}: {n}")
        encoder += n.startswith("clip.") and bool(g.abs().sum() > 0)
    assert encoder > 10, what  # the encoders really received gradients


@pytest.mark.parametrize("name", sorted(METHODS))
def test_chunked_gradients_are_exact(name: str):
    batch = make_batch()
    method = make_method(name, dropout=0.0)
    want = plain_grads(method, batch)
    for chunk in CHUNKS:
        assert_same(chunked_grads(method, batch, chunk), want, f"{name} chunk={chunk}, dropout off")
    undropped = want
    method = make_method(name, dropout=0.2)
    for chunk in CHUNKS:
        want = reference_grads(method, batch, chunk)
        assert_same(chunked_grads(method, batch, chunk), want, f"{name} chunk={chunk}, dropout on")
    assert any(not torch.allclose(undropped[n], want[n]) for n in want), "dropout is not live"


def test_without_replay_the_gradient_is_wrong(monkeypatch):
    """The generator states matter: skipping their restore makes the second pass draw other masks."""
    import vidbench.methods.grad_cache as gc

    batch = make_batch()
    method = make_method("clip4clip-seqtransf", dropout=0.2)
    want = reference_grads(method, batch, 4)
    monkeypatch.setattr(gc.RngState, "restore", lambda self: None)
    got = chunked_grads(method, batch, 4)
    assert any(not torch.allclose(got[n], want[n], rtol=1e-6, atol=1e-9) for n in want)


def test_batch_norm_in_the_chunked_encoders_is_refused():
    """A BatchNorm among the per-chunk modules stops the step with its name; one in eval mode does not."""
    method = make_method("clip4clip-meanp", dropout=0.0)
    bn = nn.BatchNorm1d(method.clip.embed_dim).double()
    method.post_bn = bn
    encode = method.encode_text

    def encode_text(ids, mask):
        out = encode(ids, mask)
        return {"text": method.post_bn(out["text"])}

    method.encode_text = encode_text
    with pytest.raises(ConfigError, match=r"post_bn \(BatchNorm1d\)"):
        grad_cache_step(method, make_batch(), 3, backward=lambda t: t.backward())
    assert batch_coupling_layers(method, [bn.eval()]) == []


def test_lightning_path_scales_like_the_returned_loss():
    """``chunked_loss_terms`` under an fp16 GradScaler (scale 1024) and accumulation over 2 micro-batches: the
    stashed chunks plus Lightning's backward of ``loss * 1024 / 2`` give 512 x the unscaled gradient, and
    gradients already in ``.grad`` (an accumulation window) survive the step."""
    from types import SimpleNamespace

    batch = make_batch()
    method = make_method("drl-wti-seqtransf-cdcr3", dropout=0.0)
    want = plain_grads(method, batch)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    method._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=scaler), accumulate_grad_batches=2)
    method.zero_grad()
    earlier = {n: torch.ones_like(p) for n, p in method.named_parameters() if n in want}
    for n, p in method.named_parameters():
        if n in earlier:
            p.grad = earlier[n].clone()
    torch.manual_seed(7)
    _, final = method.chunked_loss_terms(batch, 3)
    for n, p in method.named_parameters():  # the chunks wait aside until backward
        assert p.grad is None or torch.equal(p.grad, earlier[n])
    method.on_before_backward(final)
    (final * 1024.0 / 2).backward()
    got = {n: g - earlier[n] for n, g in grads(method).items()}
    method._trainer = None
    assert_same(got, {n: g * 512.0 for n, g in want.items()}, "scaled + accumulated")


def test_bf16_autocast_chunked_matches_unchunked():
    """Under bf16 autocast (CPU) the chunked gradient matches the unchunked one to bf16 precision."""
    batch = make_batch()
    method = make_method("clip4clip-seqtransf", dropout=0.0).float()
    method.pixels = lambda video, mask: normalize_video(video, mask)  # type: ignore[method-assign]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = plain_grads(method, batch)
        got = chunked_grads(method, batch, 3)
    a = torch.cat([want[n].flatten() for n in want])
    b = torch.cat([got[n].flatten() for n in want])
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.999
    assert (a - b).norm() < 0.05 * a.norm()


def test_suggested_chunk():
    assert suggest_chunk(128, None) == 32 and suggest_chunk(24, None) == 4
    assert suggest_chunk(128, 32) == 16 and suggest_chunk(128, 1) is None


def _ddp_worker(rank: int, world: int, out: str, names: tuple[str, ...]) -> None:
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    per = B // world
    local = {k: v[rank * per : (rank + 1) * per] for k, v in make_batch().items()}

    class Step(nn.Module):  # what Lightning's training_step is to DDP: the step runs inside DDP's forward
        def __init__(self, method: nn.Module) -> None:
            super().__init__()
            self.method, self.chunk = method, 1

        def forward(self, batch):
            return grad_cache_step(self.method, batch, self.chunk, backward=lambda t: t.backward())[1]

    def averaged(g: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for v in g.values():
            dist.all_reduce(v)
            v /= world
        return g

    checked = 0
    for name in names:
        # dropout off: chunks of 3 against unchunked DDP (itself equal to one process on the whole batch, see
        # test_ddp_gradients); dropout on: chunks of 1 and B/2 against the per-rank autograd reference
        for dropout, chunks in ((0.0, (3,)), (0.2, (1, per // 2))):
            method = make_method(name, dropout=dropout)
            step = Step(method)
            ddp = DistributedDataParallel(step)
            for chunk in chunks:
                if dropout:
                    want = averaged(reference_grads(method, local, chunk, seed=7 + rank))
                else:
                    want = averaged(plain_grads(method, local, seed=7 + rank))
                method.zero_grad()
                torch.manual_seed(7 + rank)
                step.chunk = chunk
                ddp(local).backward()
                assert_same(grads(method), want, f"DDP {name} chunk={chunk} p={dropout}")
                checked += 1
    if rank == 0:
        Path(out).write_text(str(checked))


# The default run covers the mechanisms DDP meets: loss-side parameters on gathered tokens (DRL's WTI heads)
# and a batch-level stage with BatchNorm before the gather (HCQ); the rehearsal runs every method.
DDP_DEFAULT = ("drl-wti-seqtransf-cdcr3", "hcq-clip")


def _ddp_check(tmp_path: Path, names: tuple[str, ...]) -> None:
    out = tmp_path / "checked.txt"
    run_processes(_ddp_worker, 2, (str(out), names))
    assert int(out.read_text()) == len(names) * 3


def test_ddp_chunked_gradients_are_exact(tmp_path: Path):
    _ddp_check(tmp_path, DDP_DEFAULT)


@pytest.mark.rehearsal
def test_ddp_chunked_gradients_are_exact_every_method(tmp_path: Path):
    _ddp_check(tmp_path, tuple(sorted(METHODS)))
