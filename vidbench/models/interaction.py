"""DRL's text-video interactions: dot product (dp), token-wise (TI) and weighted token-wise (WTI).

Reference semantics (foolwood/DRL ``wti_interaction``, spec ``methods-clip4clip-drl.md`` §3.3):

1. WTI weights come from the *unnormalised* features: ``w = softmax_L(head(x).masked_fill(mask == 0, -inf))``.
2. Tokens and frames are L2-normalised one by one and
   ``s[a, b, i, j] = <t_ai, v_bj> * tm[a, i] * vm[b, j]``, so padded entries are exactly 0.
3. ``t2v_max[a, b, i] = max_j s`` and ``v2t_max[a, b, j] = max_i s``. With ``padding="zero"`` (the
   reference) the maxima run over every position, padded ones included: when all valid similarities of a
   token are negative, the padded 0 wins. ``padding="neg_inf"`` is the named alternative that leaves
   padded positions out of the maxima and out of the sums.
4. TI averages the maxima over valid tokens/frames, WTI weights them; ``S = (t2v + v2t) / 2``. The logit
   scale is not applied here: the reference scales only in training, and the caller does it.

Test-time scoring never builds ``[N_text, N_video, L_t, L_v]``: ``tokenwise_scores_blocked`` runs one matmul
per block of texts x videos under a byte budget, on features prepared once per item (``prepare_tokens``),
and skips padding positions exactly (see its docstring). ``simple_block_loop_scores`` is the
straightforward 32 x 32 chunk loop of DRL's evaluation, kept as the benchmark baseline.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidbench.errors import ConfigError, DataError

__all__ = [
    "WTIHead",
    "dp_similarity",
    "dp_video_embedding",
    "l2_normalize",
    "prepare_tokens",
    "select_eot",
    "simple_block_loop_scores",
    "tokenwise_argmax",
    "tokenwise_scores_blocked",
    "tokenwise_similarity",
]

_MODES = ("ti", "wti")
_PADDINGS = ("zero", "neg_inf")


# ----------------------------------------------------------------------------------------------------------
# WTI weight head


class WTIHead(nn.Module):
    """Per-token importance for WTI: an MLP gives one logit per token, softmax over the valid tokens.

    ``arch`` 1 is a single ``Linear(width, 1)``; 2 (published) adds one hidden ``Linear(width, width)`` +
    ReLU; 3 adds two. Weights start from ``normal(0, 0.02)`` and biases from 0, as in the reference.

    Parameter names match the reference's ``text_weight_fc`` / ``video_weight_fc`` (``0.weight``,
    ``2.weight``, ... for arch 2/3, and a bare ``weight``/``bias`` for arch 1), so a reference checkpoint
    loads into a model that stores the heads under those attribute names.
    """

    def __init__(self, width: int, arch: int = 2) -> None:
        super().__init__()
        if width < 1:
            raise ConfigError(f"WTIHead width must be >= 1, got {width}")
        if arch not in (1, 2, 3):
            raise ConfigError(f"WTIHead arch must be 1, 2 or 3 (wti_arch), got {arch!r}")
        self.width = width
        self.arch = arch
        if arch == 1:
            self.weight = nn.Parameter(torch.empty(1, width))
            self.bias = nn.Parameter(torch.empty(1))
            self._layers: list[str] = []
        else:
            modules: list[nn.Module] = []
            for _ in range(arch - 1):
                modules += [nn.Linear(width, width), nn.ReLU()]
            modules.append(nn.Linear(width, 1))
            self._layers = [str(i) for i in range(len(modules))]
            for name, module in zip(self._layers, modules, strict=True):
                self.add_module(name, module)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reference init: ``normal(0, 0.02)`` weights, zero biases."""
        if self.arch == 1:
            nn.init.normal_(self.weight, mean=0.0, std=0.02)
            nn.init.zeros_(self.bias)
            return
        for name in self._layers:
            module = getattr(self, name)
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                nn.init.zeros_(module.bias)

    def logits(self, x: Tensor) -> Tensor:
        """Unmasked per-token logits ``[N, L]`` of features ``[N, L, width]``."""
        if self.arch == 1:
            return F.linear(x, self.weight, self.bias).squeeze(-1)
        for name in self._layers:
            x = getattr(self, name)(x)
        return x.squeeze(-1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Softmax weights ``[N, L]`` over the valid positions of ``x [N, L, width]`` (padded -> exactly 0).

        ``x`` must be the features *before* L2 normalisation, as in the reference.
        """
        _check_tokens("WTIHead input", x, mask)
        if x.shape[-1] != self.width:
            raise DataError(f"WTIHead expects feature width {self.width}, got {x.shape[-1]} (shape {tuple(x.shape)})")
        logits = self.logits(x).masked_fill(mask == 0, float("-inf"))
        return torch.softmax(logits, dim=-1)

    def extra_repr(self) -> str:
        return f"width={self.width}, arch={self.arch}"


# ----------------------------------------------------------------------------------------------------------
# validation and small helpers


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {allowed}, got {value!r}")


def _check_tokens(name: str, x: Tensor, mask: Tensor) -> None:
    """``x [N, L, D]`` with ``mask [N, L]`` (1 valid, 0 padding) and at least one valid position per item."""
    if x.dim() != 3:
        raise DataError(f"{name}: expected features [N, L, D], got shape {tuple(x.shape)}")
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise DataError(f"{name}: mask shape {tuple(mask.shape)} does not match features {tuple(x.shape[:2])}")
    if x.shape[0] == 0:
        raise DataError(f"{name}: no items (N = 0)")
    counts = (mask != 0).sum(-1)
    empty = torch.nonzero(counts == 0).flatten()
    if empty.numel():
        rows = empty[:5].tolist()
        raise DataError(
            f"{name}: item(s) {rows} have no valid position (mask all zero); "
            "fix: drop those items or check the tokenizer / frame sampler that produced the mask"
        )


def _check_weights(name: str, w: Tensor | None, mask: Tensor) -> Tensor:
    if w is None:
        raise ConfigError(f"mode='wti' needs {name} [N, L] (softmax weights from a WTIHead); got None")
    if tuple(w.shape) != tuple(mask.shape):
        raise DataError(f"{name}: shape {tuple(w.shape)} does not match the mask {tuple(mask.shape)}")
    return w


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """L2-normalise along the last dim; ``eps`` only matters for (padded, pre-masked) all-zero rows."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def prepare_tokens(x: Tensor, mask: Tensor) -> Tensor:
    """Per-token L2-normalised features multiplied by the mask: done once per item at encode time.

    Zeroing padded rows here is what makes zero-padding free in ``tokenwise_scores_blocked``. Half types are
    upcast to fp32 first (a bf16 normalisation, as mixed-precision encoders give, is off by ~1e-2 in the
    norm); fp32 and fp64 keep their precision.
    """
    _check_tokens("prepare_tokens", x, mask)
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return l2_normalize(x) * mask.to(x.dtype).unsqueeze(-1)


def select_eot(tokens: Tensor, mask: Tensor) -> Tensor:
    """DRL's "dp" text vector: the row at ``sum(mask) - 1`` (the EOT token for prefix masks) -> ``[N, D]``."""
    _check_tokens("select_eot", tokens, mask)
    last = (mask != 0).sum(-1) - 1
    return tokens[torch.arange(tokens.shape[0], device=tokens.device), last]


def dp_video_embedding(video_frames: Tensor, video_mask: Tensor) -> Tensor:
    """Frames L2-normalised, mean over valid frames, L2-normalised again -> ``[B, D]``."""
    _check_tokens("video", video_frames, video_mask)
    m = video_mask.to(video_frames.dtype).unsqueeze(-1)
    pooled = (l2_normalize(video_frames) * m).sum(1) / m.sum(1)
    return l2_normalize(pooled)


def dp_similarity(text_eot: Tensor, video_frames: Tensor, video_mask: Tensor) -> Tensor:
    """The "dp" baseline ``[A, B]``: normalised EOT against normalised mean-pooled frames (no scale)."""
    if text_eot.dim() != 2:
        raise DataError(f"text_eot: expected [A, D], got shape {tuple(text_eot.shape)}")
    return l2_normalize(text_eot) @ dp_video_embedding(video_frames, video_mask).t()


# ----------------------------------------------------------------------------------------------------------
# direct (training) token-wise similarity


def _masked_sim(t: Tensor, tm: Tensor, v: Tensor, vm: Tensor) -> Tensor:
    """``s = <t_ai, v_bj> * tm[a, i] * vm[b, j]`` on L2-normalised tokens, laid out ``[A, Lt, B, Lv]``.

    The masks are applied to the ``[N, L, D]`` inputs (for 0/1 masks this equals multiplying ``s``), and
    one contiguous matmul replaces the reference's einsum + two strided mask products on the 4-D tensor.
    """
    tn = l2_normalize(t) * tm.to(t.dtype).unsqueeze(-1)
    vn = l2_normalize(v) * vm.to(v.dtype).unsqueeze(-1)
    a, lt, d = tn.shape
    b, lv, _ = vn.shape
    return (tn.reshape(a * lt, d) @ vn.reshape(b * lv, d).t()).view(a, lt, b, lv)


def tokenwise_similarity(
    t: Tensor,
    tm: Tensor,
    v: Tensor,
    vm: Tensor,
    *,
    mode: str,
    text_weights: Tensor | None = None,
    video_weights: Tensor | None = None,
    padding: str = "zero",
) -> Tensor:
    """TI / WTI score ``[A, B]`` between texts ``t [A, Lt, D]`` and videos ``v [B, Lv, D]`` (spec §3.3).

    Builds the full ``[A, B, Lt, Lv]`` tensor and supports autograd (training on the gathered batch).
    ``t``/``v`` need not be normalised (it is done here). ``mode="wti"`` needs ``text_weights [A, Lt]``
    and ``video_weights [B, Lv]``, normally from ``WTIHead`` on the unnormalised features.
    ``padding="zero"`` is the reference; ``"neg_inf"`` excludes padded positions from maxima and sums.
    The max uses ``Tensor.max(dim)`` as the reference does, so a gradient goes to one index per max.
    """
    _check_choice("mode", mode, _MODES)
    _check_choice("padding", padding, _PADDINGS)
    _check_tokens("text", t, tm)
    _check_tokens("video", v, vm)
    if t.shape[-1] != v.shape[-1]:
        raise DataError(f"text and video feature dims differ: {t.shape[-1]} vs {v.shape[-1]}")
    if mode == "wti":
        wt = _check_weights("text_weights", text_weights, tm)
        wv = _check_weights("video_weights", video_weights, vm)
    tvalid = tm != 0
    vvalid = vm != 0
    s = _masked_sim(t, tm, v, vm)  # [A, Lt, B, Lv]
    if padding == "neg_inf":
        valid = tvalid[:, :, None, None] & vvalid[None, None, :, :]
        s = s.masked_fill(~valid, float("-inf"))
    t2v_max = s.max(dim=3).values.transpose(1, 2)  # [A, B, Lt]
    v2t_max = s.max(dim=1).values  # [A, B, Lv]
    if padding == "neg_inf":
        # padded tokens/frames (all -inf rows) contribute nothing
        t2v_max = t2v_max.masked_fill(~tvalid[:, None, :], 0.0)
        v2t_max = v2t_max.masked_fill(~vvalid[None, :, :], 0.0)
    if mode == "ti":
        t2v = t2v_max.sum(-1) / tm.to(s.dtype).sum(-1)[:, None]
        v2t = v2t_max.sum(-1) / vm.to(s.dtype).sum(-1)[None, :]
    else:
        t2v = torch.einsum("abi,ai->ab", t2v_max, wt.to(s.dtype))
        v2t = torch.einsum("abj,bj->ab", v2t_max, wv.to(s.dtype))
    return (t2v + v2t) / 2.0


def tokenwise_argmax(t: Tensor, tm: Tensor, v: Tensor, vm: Tensor, *, padding: str = "zero") -> tuple[Tensor, Tensor]:
    """Argmax partners on the diagonal pairs (text b, video b), as CDCR variants 2 and 3 use them.

    Returns ``t2v_idx [B, Lt]`` (for each token i of text b, the frame ``argmax_j s[b, b, i, j]``) and
    ``v2t_idx [B, Lv]`` (for each frame j of video b, the token ``argmax_i s[b, b, i, j]``). Ties go to
    the first index. With ``padding="zero"`` a padded position can win (its entry is 0 and every valid
    similarity may be negative), exactly as in the reference; ``"neg_inf"`` restricts partners to valid
    positions. Rows of padded tokens/frames hold meaningless indices: callers keep only valid rows.
    """
    _check_choice("padding", padding, _PADDINGS)
    _check_tokens("text", t, tm)
    _check_tokens("video", v, vm)
    if t.shape[0] != v.shape[0]:
        raise DataError(f"diagonal pairs need as many texts as videos, got {t.shape[0]} and {v.shape[0]}")
    with torch.no_grad():
        s = torch.einsum("bid,bjd->bij", l2_normalize(t), l2_normalize(v))
        s = s * tm.to(s.dtype)[:, :, None] * vm.to(s.dtype)[:, None, :]
        if padding == "neg_inf":
            s = s.masked_fill(~((tm != 0)[:, :, None] & (vm != 0)[:, None, :]), float("-inf"))
        return s.argmax(dim=-1), s.argmax(dim=-2)


# ----------------------------------------------------------------------------------------------------------
# test-time scoring


def _get(feats: dict[str, Tensor], side: str, mode: str) -> tuple[Tensor, Tensor, Tensor | None]:
    if not isinstance(feats, dict):
        raise DataError(f"{side} features must be a dict with 'tokens' and 'mask', got {type(feats).__name__}")
    if "tokens" in feats and "frames" in feats:
        raise DataError(f"{side} features have both 'tokens' and 'frames'; pass one of them")
    key = "tokens" if "tokens" in feats else "frames"
    if key not in feats or "mask" not in feats:
        raise DataError(
            f"{side} features need keys 'tokens' (or 'frames') and 'mask', got {sorted(feats)}; "
            "fix: build them with prepare_tokens(x, mask) at encode time"
        )
    x, mask = feats[key], feats["mask"]
    _check_tokens(side, x, mask)
    w = feats.get("weights")
    if mode == "wti":
        w = _check_weights(f"{side} 'weights'", w, mask)
    return x, mask, w


def _check_prepared(side: str, x: Tensor, mask: Tensor, chunk: int = 4096) -> None:
    """The blocked scorer's exactness rests on unit-norm valid rows and all-zero padded rows."""
    with torch.no_grad():
        for i in range(0, x.shape[0], chunk):
            norms = x[i : i + chunk].norm(dim=-1)
            valid = mask[i : i + chunk] != 0
            bad_valid = (valid & ((norms - 1.0).abs() > 1e-3)).any(-1)
            bad_pad = (~valid & (norms != 0)).any(-1)
            bad = torch.nonzero(bad_valid | bad_pad).flatten()
            if bad.numel():
                rows = (bad[:5] + i).tolist()
                raise DataError(
                    f"{side} item(s) {rows}: tokens are not prepared (valid rows must be L2-normalised and "
                    "padded rows zero); fix: pass prepare_tokens(x, mask) as 'tokens'"
                )


def _compaction(mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Valid counts ``[N]``, a per-item order of positions with valid ones first ``[N, L]``, and the item
    order by descending count (so blocks group items of similar length)."""
    valid = mask != 0
    counts = valid.sum(-1)
    pos = torch.sort((~valid).to(torch.int8), dim=-1, stable=True).indices
    order = torch.sort(counts, descending=True, stable=True).indices
    return counts, pos, order


def _block_bytes(a: int, lt: int, b: int, lv: int, d: int, elem: int) -> int:
    """Working set of one block: the similarity tensor, both maxima (plus one copy each for the weighted
    sums), the gathered token blocks and the score block."""
    return elem * (a * lt * b * lv + 2 * a * lt * b + 2 * a * b * lv + a * lt * d + b * lv * d + 4 * a * b)


# On CPU, blocks of a few tens of MB run faster than budget-filling ones: the matmul output and the two
# max passes stay closer to the caches and the TLB (measured ~13-15 ns/entry at 4-64 MB against ~21-25
# ns/entry at 220-550 MB on the development box). On CUDA the whole budget is used.
_CPU_BLOCK_BYTES = 32 * 2**20


def tokenwise_scores_blocked(
    text: dict[str, Tensor],
    video: dict[str, Tensor],
    *,
    mode: str,
    padding: str = "zero",
    budget_bytes: int = 256 * 2**20,
    block_bytes: int | None = None,
    out_device: torch.device | str | None = None,
) -> Tensor:
    """TI / WTI scores ``[n_text, n_video]`` for a whole test split, equal to ``tokenwise_similarity``.

    ``text = {"tokens": [Nt, Lt, D], "mask": [Nt, Lt], "weights": [Nt, Lt]}`` with tokens from
    ``prepare_tokens`` (normalised and zeroed at padding); ``video`` likewise (``"tokens"`` or
    ``"frames"``). ``"weights"`` is needed for ``mode="wti"`` only.

    Why it is fast: per block of ``a`` texts x ``b`` videos it runs ONE matmul
    ``(a*lt, D) @ (D, lv*b)``, viewed as ``[a, lt, lv, b]`` and reduced by ``amax`` over ``lv`` and over
    ``lt``. Items are sorted by valid length and each item's valid positions are moved first, so a block
    only spans ``lt``/``lv`` = the longest valid length in it: padding positions are skipped instead of
    multiplied. This is exact: a padded entry is 0, so under ``padding="zero"`` it only matters when an
    item has padding, and then ``max(max over valid, 0)`` restores it (a 0 "floor"); under ``"neg_inf"`` the
    remaining in-block padding is masked with ``-inf``. Blocks are sized so ``_block_bytes`` stays under
    ``min(budget_bytes, block_bytes)``; ``block_bytes`` defaults to 32 MiB on CPU (faster than larger
    blocks) and to the budget on CUDA. One similarity buffer is reused across blocks. Runs under
    ``torch.no_grad`` on the features' device (CPU or CUDA); note that on CUDA, TF32 matmuls
    (``torch.set_float32_matmul_precision("high")``) change scores at ~1e-3.
    """
    _check_choice("mode", mode, _MODES)
    _check_choice("padding", padding, _PADDINGS)
    tx, tmask, tw = _get(text, "text", mode)
    vx, vmask, vw = _get(video, "video", mode)
    if tx.shape[-1] != vx.shape[-1]:
        raise DataError(f"text and video feature dims differ: {tx.shape[-1]} vs {vx.shape[-1]}")
    _check_prepared("text", tx, tmask)
    _check_prepared("video", vx, vmask)
    if tx.device != vx.device:
        raise DataError(f"text features are on {tx.device} but video features on {vx.device}")
    nt, full_lt, d = tx.shape
    nv, full_lv, _ = vx.shape
    dtype, device = tx.dtype, tx.device
    elem = tx.element_size()
    smallest = _block_bytes(1, full_lt, 1, full_lv, d, elem)
    if smallest > budget_bytes:
        raise ConfigError(
            f"budget_bytes={budget_bytes} is too small for even one text x video pair "
            f"(needs {smallest}); raise the budget"
        )
    if block_bytes is None:
        block_bytes = _CPU_BLOCK_BYTES if device.type == "cpu" else budget_bytes
    target = max(smallest, min(budget_bytes, block_bytes))

    with torch.no_grad():
        tcount, tpos, torder = _compaction(tmask)
        vcount, vpos, vorder = _compaction(vmask)
        tcount_list = tcount[torder].tolist()
        vcount_list = vcount[vorder].tolist()
        zero = torch.zeros((), dtype=dtype, device=device)
        ninf = torch.full((), float("-inf"), dtype=dtype, device=device)
        # zero-padding floors: 0 for items that have any padding (their padded 0 takes part in the max)
        tfloor = torch.where(tcount < full_lt, zero, ninf)
        vfloor = torch.where(vcount < full_lv, zero, ninf)
        tdenom = tcount.to(dtype)
        vdenom = vcount.to(dtype)
        out = torch.empty(nt, nv, dtype=dtype, device=out_device if out_device is not None else device)

        # video blocks: roughly square matmuls (a*lt ~ b*lv ~ sqrt of the entry target), balanced sizes
        entries = target // elem
        b_cap = max(1, min(nv, int(math.isqrt(max(entries, 1))) // max(vcount_list[0], 1)))
        while b_cap > 1 and _block_bytes(1, tcount_list[0], b_cap, vcount_list[0], d, elem) > target:
            b_cap //= 2
        n_vblocks = math.ceil(nv / b_cap)
        b_size = math.ceil(nv / n_vblocks)

        workspace: Tensor | None = None
        for v0 in range(0, nv, b_size):
            vrows = vorder[v0 : v0 + b_size]
            b = vrows.numel()
            lv = vcount_list[v0]  # longest valid length in this block (sorted descending)
            vidx = vpos[vrows, :lv]
            vblock = vx[vrows[:, None], vidx]  # [b, lv, D], valid frames first
            # columns ordered (frame, video): both maxima then reduce a non-innermost dim, which
            # vectorises over the contiguous video axis (an innermost max over ~12 values is 3x slower)
            vflat_t = vblock.transpose(0, 1).reshape(lv * b, d).t()
            vslot_pad = torch.arange(lv, device=device)[:, None] >= vcount[vrows][None, :]  # [lv, b]
            if mode == "wti":
                vwb = vw[vrows[:, None], vidx].to(dtype).t()  # [lv, b]
            t0 = 0
            while t0 < nt:
                lt = tcount_list[t0]
                fixed = _block_bytes(0, lt, b, lv, d, elem)  # the video block itself
                per_text = _block_bytes(1, lt, b, lv, d, elem) - fixed
                a_max = max(1, min(nt - t0, (target - fixed) // per_text))
                a = math.ceil((nt - t0) / math.ceil((nt - t0) / a_max))  # balanced, never above a_max
                trows = torder[t0 : t0 + a]
                tidx = tpos[trows, :lt]
                tblock = tx[trows[:, None], tidx]  # [a, lt, D]
                n_sim = a * lt * lv * b
                if workspace is None or workspace.numel() < n_sim:
                    workspace = torch.empty(n_sim, dtype=dtype, device=device)
                # reusing one buffer avoids fresh page faults (CPU) / allocator churn on every block
                sim = torch.mm(tblock.reshape(a * lt, d), vflat_t, out=workspace[:n_sim].view(a * lt, lv * b))
                sim = sim.view(a, lt, lv, b)
                if padding == "zero":
                    t2v = torch.maximum(sim.amax(dim=2), vfloor[vrows][None, None, :])  # [a, lt, b]
                    v2t = torch.maximum(sim.amax(dim=1), tfloor[trows][:, None, None])  # [a, lv, b]
                else:
                    # padded token rows are 0 (pre-masked), so only padded frames need excluding for t2v
                    sim.masked_fill_(vslot_pad[None, None], float("-inf"))
                    t2v = sim.amax(dim=2)
                    tslot_pad = torch.arange(lt, device=device)[None, :] >= tcount[trows][:, None]
                    sim.masked_fill_(tslot_pad[:, :, None, None], float("-inf"))
                    v2t = sim.amax(dim=1).masked_fill_(vslot_pad[None], 0.0)
                if mode == "ti":
                    t2v_s = t2v.sum(1) / tdenom[trows][:, None]
                    v2t_s = v2t.sum(1) / vdenom[vrows][None, :]
                else:
                    twb = tw[trows[:, None], tidx].to(dtype)
                    t2v_s = torch.einsum("aib,ai->ab", t2v, twb)
                    v2t_s = (v2t * vwb[None]).sum(1)
                score = (t2v_s + v2t_s) / 2.0
                out[trows.to(out.device)[:, None], vrows.to(out.device)[None, :]] = score.to(out.device)
                del sim, t2v, v2t
                t0 += a
    return out


def simple_block_loop_scores(
    text: dict[str, Tensor],
    video: dict[str, Tensor],
    *,
    mode: str,
    padding: str = "zero",
    block: int = 32,
) -> Tensor:
    """DRL's evaluation loop (spec §3.6): ``block x block`` chunks, each building ``[block, block, Lt, Lv]``
    with einsum and mask products as the reference does. The baseline ``bench_tokenwise`` compares against;
    same inputs as ``tokenwise_scores_blocked`` (weights are precomputed, not re-run per chunk as the
    reference's eval does, which would only slow the baseline further)."""
    _check_choice("mode", mode, _MODES)
    tx, tmask, tw = _get(text, "text", mode)
    vx, vmask, vw = _get(video, "video", mode)
    if block < 1:
        raise ConfigError(f"block must be >= 1, got {block}")
    nt, nv = tx.shape[0], vx.shape[0]
    out = torch.empty(nt, nv, dtype=tx.dtype, device=tx.device)
    with torch.no_grad():
        for i in range(0, nt, block):
            for j in range(0, nv, block):
                out[i : i + block, j : j + block] = _drl_style_chunk(
                    tx[i : i + block],
                    tmask[i : i + block],
                    vx[j : j + block],
                    vmask[j : j + block],
                    mode=mode,
                    text_weights=None if tw is None else tw[i : i + block],
                    video_weights=None if vw is None else vw[j : j + block],
                    padding=padding,
                )
    return out


def _drl_style_chunk(
    t: Tensor,
    tm: Tensor,
    v: Tensor,
    vm: Tensor,
    *,
    mode: str,
    text_weights: Tensor | None,
    video_weights: Tensor | None,
    padding: str,
) -> Tensor:
    """One chunk the way the reference evaluates it: normalise, einsum to ``[a, b, Lt, Lv]``, multiply the
    two masks in with einsum, ``max`` (values and indices) over each axis, then average or weight."""
    t = l2_normalize(t)
    v = l2_normalize(v)
    tmf = tm.to(t.dtype)
    vmf = vm.to(v.dtype)
    s = torch.einsum("atd,bvd->abtv", t, v)
    s = torch.einsum("abtv,at->abtv", s, tmf)
    s = torch.einsum("abtv,bv->abtv", s, vmf)
    if padding == "neg_inf":
        s = s.masked_fill(~((tm != 0)[:, None, :, None] & (vm != 0)[None, :, None, :]), float("-inf"))
    t2v, _ = s.max(dim=-1)
    v2t, _ = s.max(dim=-2)
    if padding == "neg_inf":
        t2v = t2v.masked_fill((tm == 0)[:, None, :], 0.0)
        v2t = v2t.masked_fill((vm == 0)[None, :, :], 0.0)
    if mode == "ti":
        t2v = t2v.sum(2) / tmf.sum(-1)[:, None]
        v2t = v2t.sum(2) / vmf.sum(-1)[None, :]
    else:
        wt = _check_weights("text_weights", text_weights, tm)
        wv = _check_weights("video_weights", video_weights, vm)
        t2v = torch.einsum("abt,at->ab", t2v, wt.to(t.dtype))
        v2t = torch.einsum("abv,bv->ab", v2t, wv.to(t.dtype))
    return (t2v + v2t) / 2.0
