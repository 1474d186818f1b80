"""Reference forwards written from the spec formulas, on tensors named as the reference code names them.

These are deliberately naive (explicit head split, explicit softmax, TF-style LayerNorm written out) and share
no code with vidbench, so an imported checkpoint is checked against the maths, not against itself. Also: tiny
random state dicts laid out exactly like the reference files (OpenAI CLIP, CLIP4Clip / DRL / EERCF model
state dicts, HCQ's head).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


# ------------------------------------------------------------------------------------------------ builders
def openai_clip_state(
    *,
    width: int = 128,
    layers: int = 2,
    vision_width: int | None = None,
    vision_layers: int | None = None,
    embed: int | None = None,
    vocab: int = 4096,
    context: int = 77,
    patch: int = 8,
    grid: int = 4,
    seed: int = 0,
    prefix: str = "",
) -> dict[str, Tensor]:
    """A random state dict with OpenAI CLIP's exact names and layouts (ViT + text transformer)."""
    g = torch.Generator().manual_seed(seed)
    vw = vision_width or width
    vl = vision_layers or layers
    d = embed or width

    def rnd(*shape: int, scale: float = 0.05) -> Tensor:
        return torch.randn(*shape, generator=g) * scale

    def ln(name: str, w: int) -> dict[str, Tensor]:
        return {f"{name}.weight": 1.0 + rnd(w, scale=0.1), f"{name}.bias": rnd(w, scale=0.1)}

    def block(name: str, w: int) -> dict[str, Tensor]:
        return {
            f"{name}.attn.in_proj_weight": rnd(3 * w, w, scale=w**-0.5),
            f"{name}.attn.in_proj_bias": rnd(3 * w),
            f"{name}.attn.out_proj.weight": rnd(w, w, scale=w**-0.5),
            f"{name}.attn.out_proj.bias": rnd(w),
            **ln(f"{name}.ln_1", w),
            f"{name}.mlp.c_fc.weight": rnd(4 * w, w, scale=w**-0.5),
            f"{name}.mlp.c_fc.bias": rnd(4 * w),
            f"{name}.mlp.c_proj.weight": rnd(w, 4 * w, scale=(4 * w) ** -0.5),
            f"{name}.mlp.c_proj.bias": rnd(w),
            **ln(f"{name}.ln_2", w),
        }

    sd: dict[str, Tensor] = {
        "positional_embedding": rnd(context, width, scale=0.01),
        "text_projection": rnd(width, d, scale=width**-0.5),
        "logit_scale": torch.tensor(math.log(1 / 0.07)),
        "token_embedding.weight": rnd(vocab, width, scale=0.02),
        **ln("ln_final", width),
        "visual.class_embedding": rnd(vw, scale=vw**-0.5),
        "visual.positional_embedding": rnd(grid * grid + 1, vw, scale=vw**-0.5),
        "visual.proj": rnd(vw, d, scale=vw**-0.5),
        "visual.conv1.weight": rnd(vw, 3, patch, patch, scale=0.05),
        **ln("visual.ln_pre", vw),
        **ln("visual.ln_post", vw),
    }
    for i in range(layers):
        sd.update(block(f"transformer.resblocks.{i}", width))
    for i in range(vl):
        sd.update(block(f"visual.transformer.resblocks.{i}", vw))
    return {prefix + k: v for k, v in sd.items()}


def seqtransf_state(width: int, layers: int, seed: int = 1, positions: int = 77) -> dict[str, Tensor]:
    """CLIP4Clip's seqTransf parameters with the reference names (``frame_position_embeddings``,
    ``transformerClip.resblocks.{i}``)."""
    blocks = openai_clip_state(width=width, layers=layers, seed=seed, context=positions)
    out = {"frame_position_embeddings.weight": blocks["positional_embedding"] * 10}
    for k, v in blocks.items():
        if k.startswith("transformer.resblocks."):
            out["transformerClip." + k[len("transformer.") :]] = v
    return out


# ------------------------------------------------------------------------------------------------ maths
def layer_norm(x: Tensor, w: Tensor, b: Tensor, eps: float) -> Tensor:
    """``w * (x - mean) / sqrt(var + eps) + b`` with the biased variance (CLIP: eps 1e-5; TF-style: 1e-12)."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return w * (x - mean) / torch.sqrt(var + eps) + b


def packed_attention(x: Tensor, sd: dict[str, Tensor], p: str, heads: int, additive: Tensor | None) -> Tensor:
    """Multi-head attention with the packed ``in_proj`` of ``nn.MultiheadAttention``; ``x`` is [B, N, W],
    ``additive`` a [B, N, N] or [N, N] mask added to the logits."""
    b, n, w = x.shape
    qkv = x @ sd[f"{p}.in_proj_weight"].t() + sd[f"{p}.in_proj_bias"]
    q, k, v = qkv[..., :w], qkv[..., w : 2 * w], qkv[..., 2 * w :]
    dh = w // heads

    def split(t: Tensor) -> Tensor:
        return t.reshape(b, n, heads, dh).transpose(1, 2)  # [B, H, N, dh]

    logits = split(q) @ split(k).transpose(-1, -2) / math.sqrt(dh)
    if additive is not None:
        logits = logits + (additive if additive.dim() == 2 else additive[:, None])
    out = (torch.softmax(logits, dim=-1) @ split(v)).transpose(1, 2).reshape(b, n, w)
    return out @ sd[f"{p}.out_proj.weight"].t() + sd[f"{p}.out_proj.bias"]


def residual_block(x: Tensor, sd: dict[str, Tensor], p: str, heads: int, additive: Tensor | None, eps: float) -> Tensor:
    h = layer_norm(x, sd[f"{p}.ln_1.weight"], sd[f"{p}.ln_1.bias"], eps)
    x = x + packed_attention(h, sd, f"{p}.attn", heads, additive)
    h = layer_norm(x, sd[f"{p}.ln_2.weight"], sd[f"{p}.ln_2.bias"], eps)
    h = h @ sd[f"{p}.mlp.c_fc.weight"].t() + sd[f"{p}.mlp.c_fc.bias"]
    h = h * torch.sigmoid(1.702 * h)  # QuickGELU
    return x + h @ sd[f"{p}.mlp.c_proj.weight"].t() + sd[f"{p}.mlp.c_proj.bias"]


def _blocks(sd: dict[str, Tensor], prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in sd if k.startswith(prefix)})


def clip_text_tokens(sd: dict[str, Tensor], ids: Tensor, heads: int, prefix: str = "") -> Tensor:
    """OpenAI ``encode_text`` without the EOT pick: ``ln_final(transformer(tok + pos[:L])) @ text_projection``,
    causal mask, no padding mask. Returns [B, L, D]."""
    s = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    length = ids.shape[1]
    x = s["token_embedding.weight"][ids] + s["positional_embedding"][:length]
    causal = torch.full((length, length), float("-inf")).triu(1)
    for i in range(_blocks(s, "transformer.resblocks.")):
        x = residual_block(x, s, f"transformer.resblocks.{i}", heads, causal, 1e-5)
    return layer_norm(x, s["ln_final.weight"], s["ln_final.bias"], 1e-5) @ s["text_projection"]


def clip_image_tokens(sd: dict[str, Tensor], pixels: Tensor, heads: int, prefix: str = "") -> Tensor:
    """OpenAI ``VisionTransformer`` with ``ln_post @ proj`` applied to every token (EERCF's patches).
    ``pixels`` [N, 3, S, S] -> [N, 1 + P, D]; row 0 is the CLS feature."""
    s = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    conv = s["visual.conv1.weight"]
    x = F.conv2d(pixels, conv, stride=conv.shape[-1])  # [N, W, g, g]
    x = x.flatten(2).transpose(1, 2)  # [N, P, W]
    cls = s["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + s["visual.positional_embedding"]
    x = layer_norm(x, s["visual.ln_pre.weight"], s["visual.ln_pre.bias"], 1e-5)
    for i in range(_blocks(s, "visual.transformer.resblocks.")):
        x = residual_block(x, s, f"visual.transformer.resblocks.{i}", heads, None, 1e-5)
    return layer_norm(x, s["visual.ln_post.weight"], s["visual.ln_post.bias"], 1e-5) @ s["visual.proj"]


def seqtransf(frames: Tensor, mask: Tensor, sd: dict[str, Tensor], heads: int) -> Tensor:
    """CLIP4Clip seqTransf: ``TransformerClip(x + P[:T], key mask -1e6) + x`` with TF-style LayerNorm 1e-12."""
    t = frames.shape[1]
    x = frames + sd["frame_position_embeddings.weight"][:t]
    additive = ((1.0 - mask.float())[:, None, :] * -1e6).expand(-1, t, -1)
    for i in range(_blocks(sd, "transformerClip.resblocks.")):
        x = residual_block(x, sd, f"transformerClip.resblocks.{i}", heads, additive, 1e-12)
    return x + frames


def normalize(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def mean_p(frames: Tensor, mask: Tensor) -> Tensor:
    """meanP: normalise frames, masked mean (count clamped to 1), normalise."""
    f = normalize(frames) * mask[..., None].float()
    return normalize(f.sum(1) / mask.float().sum(1, keepdim=True).clamp(min=1))


def wti_head(x: Tensor, mask: Tensor, sd: dict[str, Tensor], name: str) -> Tensor:
    """DRL's weight head (Linear-ReLU-Linear for wti_arch 2), softmax over valid tokens."""
    h = torch.relu(x @ sd[f"{name}.0.weight"].t() + sd[f"{name}.0.bias"])
    logits = (h @ sd[f"{name}.2.weight"].t() + sd[f"{name}.2.bias"]).squeeze(-1)
    return torch.softmax(logits.masked_fill(mask == 0, float("-inf")), dim=-1)


def wti_scores(t: Tensor, tm: Tensor, v: Tensor, vm: Tensor, wt: Tensor, wv: Tensor) -> Tensor:
    """DRL WTI with the reference's padded-entries-are-0 rule: [A, B]."""
    s = torch.einsum("aid,bjd->abij", normalize(t), normalize(v))
    s = s * tm[:, None, :, None].float() * vm[None, :, None, :].float()
    t2v = (s.max(-1).values * wt[:, None, :]).sum(-1)
    v2t = (s.max(-2).values * wv[None, :, :]).sum(-1)
    return (t2v + v2t) / 2


def netvlad(x: Tensor, mask: Tensor, sd: dict[str, Tensor], p: str, clusters: int) -> Tensor:
    """HCQ's NetVLAD (eval-mode BatchNorm): logits ``(x @ clusters)[:, :K]``, the BatchNorm, softmax over K,
    ``V_k = sum_n a_nk x_n - (sum_n a_nk) c_k`` with ``c = clusters2``, then L2 per cluster. Only all-valid
    masks are passed here, where the mask/BatchNorm order cannot matter."""
    assert bool(mask.all()), "the reference order of mask and BatchNorm is not exercised here"
    logits = (x @ sd[f"{p}.clusters"])[..., :clusters]
    bn = f"{p}.batch_norm"
    logits = (logits - sd[f"{bn}.running_mean"]) / torch.sqrt(sd[f"{bn}.running_var"] + 1e-5)
    logits = logits * sd[f"{bn}.weight"] + sd[f"{bn}.bias"]
    a = torch.softmax(logits, dim=-1)  # [B, N, K]
    c = sd[f"{p}.clusters2"][0].t()  # [K, D]
    vlad = torch.einsum("bnk,bnd->bkd", a, x) - a.sum(1)[..., None] * c
    return normalize(vlad)


def pq_codes(x: Tensor, codebook: Tensor) -> Tensor:
    """HCQ's PQLayer hard codes: argmax over K of <normalised sub-vector m, C[m, k]>: [B, M]."""
    m, _, d = codebook.shape
    sub = F.normalize(x.reshape(x.shape[0], m, d), dim=-1)
    return torch.einsum("bmd,mkd->bmk", sub, codebook).argmax(-1)


# ------------------------------------------------------------------------------------------------ HCQ on MMT
def hcq_mmt_encoders_state(
    experts: dict[str, int],
    *,
    vocab: int,
    text_width: int,
    text_layers: int,
    text_positions: int,
    width: int,
    video_layers: int,
    video_positions: int,
    seed: int = 5,
) -> dict[str, Tensor]:
    """HCQ's MMT/BERT encoders as its ``model_best.pth`` names them: ``txt_bert.*`` (Hugging Face ``BertModel``
    as saved by the transformers 3.x HCQ used: ``LayerNorm``, a pooler and the ``position_ids`` buffer),
    ``text_GU.<e>.{fc,cg.fc,cg.batch_norm}``, ``moe_fc_txt.<e>``, ``text_vlad_proj``,
    ``video_dim_reduce.<e>.fc`` and ``vid_bert.*`` (MMT's own BERT: ``layer_norm``, no word table, a pooler)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 0.1) -> Tensor:
        return torch.randn(*shape, generator=g) * scale

    def linear(name: str, out_dim: int, in_dim: int) -> dict[str, Tensor]:
        return {f"{name}.weight": rnd(out_dim, in_dim, scale=in_dim**-0.5), f"{name}.bias": rnd(out_dim)}

    def norm(name: str, w: int) -> dict[str, Tensor]:
        return {f"{name}.weight": 1.0 + rnd(w), f"{name}.bias": rnd(w)}

    def bert_layers(prefix: str, w: int, layers: int, ln: str) -> dict[str, Tensor]:
        sd: dict[str, Tensor] = {}
        for i in range(layers):
            p = f"{prefix}.encoder.layer.{i}"
            for part in ("query", "key", "value"):
                sd.update(linear(f"{p}.attention.self.{part}", w, w))
            sd.update(linear(f"{p}.attention.output.dense", w, w))
            sd.update(norm(f"{p}.attention.output.{ln}", w))
            sd.update(linear(f"{p}.intermediate.dense", 2 * w, w))
            sd.update(linear(f"{p}.output.dense", w, 2 * w))
            sd.update(norm(f"{p}.output.{ln}", w))
        sd.update(linear(f"{prefix}.pooler.dense", w, w))
        return sd

    tw = text_width
    sd: dict[str, Tensor] = {
        "txt_bert.embeddings.word_embeddings.weight": rnd(vocab, tw, scale=0.5),
        "txt_bert.embeddings.position_embeddings.weight": rnd(text_positions, tw, scale=0.5),
        "txt_bert.embeddings.token_type_embeddings.weight": rnd(2, tw, scale=0.5),
        "txt_bert.embeddings.position_ids": torch.arange(text_positions).unsqueeze(0),
        **norm("txt_bert.embeddings.LayerNorm", tw),
        **bert_layers("txt_bert", tw, text_layers, "LayerNorm"),
        **linear("text_vlad_proj", width, tw),
        "vid_bert.embeddings.position_embeddings.weight": rnd(video_positions, width, scale=0.5),
        "vid_bert.embeddings.token_type_embeddings.weight": rnd(19, width, scale=0.5),
        **norm("vid_bert.embeddings.layer_norm", width),
        **bert_layers("vid_bert", width, video_layers, "layer_norm"),
    }
    for e, dim in sorted(experts.items()):
        sd.update(linear(f"text_GU.{e}.fc", width, tw))
        sd.update(linear(f"text_GU.{e}.cg.fc", width, width))
        sd.update(norm(f"text_GU.{e}.cg.batch_norm", width))
        sd[f"text_GU.{e}.cg.batch_norm.running_mean"] = rnd(width)
        sd[f"text_GU.{e}.cg.batch_norm.running_var"] = 0.5 + torch.rand(width, generator=g)
        sd[f"text_GU.{e}.cg.batch_norm.num_batches_tracked"] = torch.tensor(9)
        sd.update(linear(f"moe_fc_txt.{e}", 1, tw))
        sd.update(linear(f"video_dim_reduce.{e}.fc", width, dim))
    return sd


def bert_encoder(x: Tensor, mask: Tensor, sd: dict[str, Tensor], prefix: str, heads: int, ln: str) -> Tensor:
    """Post-LN BERT layers (eps 1e-12) on embedded ``x`` [B, N, W]: attention logits get ``(1 - mask) * -10000``
    on the keys, the FFN uses erf-GELU."""
    b, n, w = x.shape
    additive = (1.0 - mask.float())[:, None, None, :] * -10000.0
    dh = w // heads

    def lin(t: Tensor, name: str) -> Tensor:
        return t @ sd[f"{name}.weight"].t() + sd[f"{name}.bias"]

    def split(t: Tensor) -> Tensor:
        return t.reshape(b, n, heads, dh).transpose(1, 2)

    for i in range(_blocks(sd, f"{prefix}.encoder.layer.")):
        p = f"{prefix}.encoder.layer.{i}"
        q, k, v = (split(lin(x, f"{p}.attention.self.{part}")) for part in ("query", "key", "value"))
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh) + additive, dim=-1)
        ctx = (probs @ v).transpose(1, 2).reshape(b, n, w)
        o = f"{p}.attention.output"
        x = layer_norm(lin(ctx, f"{o}.dense") + x, sd[f"{o}.{ln}.weight"], sd[f"{o}.{ln}.bias"], 1e-12)
        h = lin(x, f"{p}.intermediate.dense")
        h = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))
        o = f"{p}.output"
        x = layer_norm(lin(h, f"{o}.dense") + x, sd[f"{o}.{ln}.weight"], sd[f"{o}.{ln}.bias"], 1e-12)
    return x


def netvlad_masked(x: Tensor, mask: Tensor, sd: dict[str, Tensor], p: str, clusters: int) -> Tensor:
    """HCQ's NetVLAD with a mask in the reference order (eval-mode BatchNorm): logits ``(x @ clusters)[:, :K]``
    times the mask, then the BatchNorm, softmax over K; every token (masked ones too, with logits BN(0)) enters
    ``V_k = sum_n a_nk x_n - (sum_n a_nk) c_k``, then L2 per cluster."""
    logits = (x @ sd[f"{p}.clusters"])[..., :clusters] * mask[..., None].float()
    bn = f"{p}.batch_norm"
    logits = (logits - sd[f"{bn}.running_mean"]) / torch.sqrt(sd[f"{bn}.running_var"] + 1e-5)
    a = torch.softmax(logits * sd[f"{bn}.weight"] + sd[f"{bn}.bias"], dim=-1)
    c = sd[f"{p}.clusters2"][0].t()
    return normalize(torch.einsum("bnk,bnd->bkd", a, x) - a.sum(1)[..., None] * c)


def hcq_mmt_text(sd: dict[str, Tensor], ids: Tensor, mask: Tensor, heads: int) -> tuple[Tensor, Tensor]:
    """HCQ's text side (spec hcq-original.md §2, §3.4): the MoE-mixed coarse vector [B, D] and the projected
    BERT tokens [B, W, D] (the fine levels' input)."""
    w = ids.shape[1]
    e = "txt_bert.embeddings"
    x = sd[f"{e}.word_embeddings.weight"][ids] + sd[f"{e}.position_embeddings.weight"][:w]
    x = x + sd[f"{e}.token_type_embeddings.weight"][0]
    x = layer_norm(x, sd[f"{e}.LayerNorm.weight"], sd[f"{e}.LayerNorm.bias"], 1e-12)
    hidden = bert_encoder(x, mask, sd, "txt_bert", heads, "LayerNorm")
    cls = hidden[:, 0]
    experts = sorted({k.split(".")[1] for k in sd if k.startswith("text_GU.")})
    embeddings, logits = [], []
    for name in experts:
        p = f"text_GU.{name}"
        y = cls @ sd[f"{p}.fc.weight"].t() + sd[f"{p}.fc.bias"]
        z = y @ sd[f"{p}.cg.fc.weight"].t() + sd[f"{p}.cg.fc.bias"]
        bn = f"{p}.cg.batch_norm"
        z = (z - sd[f"{bn}.running_mean"]) / torch.sqrt(sd[f"{bn}.running_var"] + 1e-5) * sd[f"{bn}.weight"]
        embeddings.append(normalize(normalize(y * torch.sigmoid(z + sd[f"{bn}.bias"]))))
        logits.append(cls @ sd[f"moe_fc_txt.{name}.weight"].t() + sd[f"moe_fc_txt.{name}.bias"])
    weights = torch.softmax(torch.cat(logits, dim=-1), dim=-1)
    coarse = sum(weights[:, i : i + 1] * t for i, t in enumerate(embeddings))
    tokens = hidden @ sd["text_vlad_proj.weight"].t() + sd["text_vlad_proj.bias"]
    return coarse, tokens


def hcq_mmt_video(
    sd: dict[str, Tensor],
    features: dict[str, Tensor],
    times: dict[str, Tensor],
    present: dict[str, Tensor],
    maxpool: dict[str, Tensor],
    types: dict[str, int],
    heads: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """HCQ's video side (spec hcq-original.md §3.1-§3.4): the coarse vector (mean of the normalised [AGG]
    outputs of all experts), the MMT outputs [B, L, D] and the fine levels' mask ([CLS] and [AGG] zeroed)."""
    b = next(iter(features.values())).shape[0]
    width = sd["vid_bert.embeddings.layer_norm.weight"].shape[0]
    top = sd["vid_bert.embeddings.position_embeddings.weight"].shape[0] - 1
    feats, pos, typ, mask, agg = [torch.zeros(b, 1, width)], [torch.zeros(b, 1)], [torch.zeros(b, 1)], [], []
    mask.append(torch.ones(b, 1))
    for name in sorted(features):
        wgt, bias = sd[f"video_dim_reduce.{name}.fc.weight"], sd[f"video_dim_reduce.{name}.fc.bias"]
        n = features[name].shape[1]
        agg.append(sum(t.shape[1] for t in feats))
        feats += [normalize(maxpool[name] @ wgt.t() + bias)[:, None], normalize(features[name] @ wgt.t() + bias)]
        pos += [torch.zeros(b, 1), torch.floor(times[name].clamp(0, top))]
        typ.append(torch.full((b, 1 + n), float(types[name])))
        mask += [present[name].max(dim=1, keepdim=True).values.float(), present[name].float()]
    e = "vid_bert.embeddings"
    x = torch.cat(feats, 1)
    x = x + sd[f"{e}.position_embeddings.weight"][torch.cat(pos, 1).long()]
    x = x + sd[f"{e}.token_type_embeddings.weight"][torch.cat(typ, 1).long()]
    x = layer_norm(x, sd[f"{e}.layer_norm.weight"], sd[f"{e}.layer_norm.bias"], 1e-12)
    full_mask = torch.cat(mask, 1)
    out = bert_encoder(x, full_mask, sd, "vid_bert", heads, "layer_norm")
    coarse = torch.stack([normalize(out[:, i]) for i in agg], dim=1).mean(dim=1)
    vlad_mask = full_mask.clone()
    vlad_mask[:, [0, *agg]] = 0
    return coarse, out, vlad_mask
