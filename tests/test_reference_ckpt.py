"""Checkpoints trained with the reference code, imported into vidbench's methods.

Each test writes a tiny checkpoint with the reference's exact parameter names and layout (CLIP4Clip's
``pytorch_model.bin.<epoch>`` state dict, DRL's and EERCF's, HCQ's trainer container), imports it into the tiny
recipe's method and checks the method's outputs against the reference forward written from the spec formulas on
the same tensors (tests/reference_forward.py), not merely that loading raised nothing.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import Tensor

from tests import reference_forward as ref
from vidbench.config import compose
from vidbench.data.transforms import normalize_video
from vidbench.eval.two_stage import gather_candidates
from vidbench.methods import build_method
from vidbench.reference_ckpt import CheckpointError, detect, load_into, read_checkpoint, write_converted

C4C_MEANP = "clip4clip-meanp_tiny_8f_b64_synth-msrvtt"
C4C_SEQ = "clip4clip-seqtransf_tiny_8f_b64_synth-msrvtt"
DRL = "drl-wti-seqtransf-cdcr_tiny_8f_b64_synth-msrvtt"
EERCF = "eercf_tiny_8f_b64_synth-msrvtt"
HCQ = "hcq-clip_tiny_8f_b64_synth-msrvtt"
HEADS = 4  # the tiny backbone's heads (its recipe fixes the architecture; shapes cannot tell heads)
TOL = {"rtol": 1e-4, "atol": 2e-5}


def _clip(seed: int = 0) -> dict[str, Tensor]:
    """OpenAI CLIP under ``clip.*`` shaped like the tiny backbone (width 64, 2 blocks, patch 8, 32 px)."""
    return ref.openai_clip_state(width=64, layers=2, vocab=4096, patch=8, grid=4, seed=seed, prefix="clip.")


def _wti(name: str, width: int, seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        f"{name}.0.weight": torch.randn(width, width, generator=g) * 0.2,
        f"{name}.0.bias": torch.randn(width, generator=g) * 0.1,
        f"{name}.2.weight": torch.randn(1, width, generator=g) * 0.5,
        f"{name}.2.bias": torch.randn(1, generator=g) * 0.1,
    }


def _method(recipe: str, *overrides: str):
    torch.manual_seed(123)  # the method's own random init differs from every tensor of the files
    return build_method(compose(recipe, list(overrides)))


def _inputs(frames: int = 8) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Token ids with SOT/EOT (HashTokenizer ids), uint8 videos and frame masks with padding."""
    g = torch.Generator().manual_seed(7)
    ids = torch.zeros(3, 12, dtype=torch.long)
    for b, n in enumerate((5, 12, 8)):
        ids[b, 0], ids[b, n - 1] = 4094, 4095
        ids[b, 1 : n - 1] = torch.randint(1, 4000, (n - 2,), generator=g)
    tmask = (ids != 0).long()
    video = torch.randint(0, 256, (3, frames, 3, 32, 32), generator=g, dtype=torch.uint8)
    vmask = torch.ones(3, frames, dtype=torch.long)
    vmask[0, 5:] = 0
    vmask[2, 2:] = 0
    video[vmask == 0] = 0
    return ids, tmask, video, vmask


def _reference_frames(sd: dict[str, Tensor], video: Tensor, vmask: Tensor) -> Tensor:
    pixels = normalize_video(video, vmask).float()
    tokens = ref.clip_image_tokens(sd, pixels.flatten(0, 1), HEADS, prefix="clip.")
    return tokens.reshape(*video.shape[:2], *tokens.shape[1:])  # [B, T, 1 + P, D]


def _save(tmp_path, obj, name: str = "pytorch_model.bin.4"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


# ------------------------------------------------------------------------------------------ CLIP4Clip
def test_clip4clip_seqtransf_equals_reference_forward(tmp_path) -> None:
    sd = {**_clip(), **ref.seqtransf_state(64, 4, seed=5)}
    path = _save(tmp_path, {f"module.{k}": v.half() if k.startswith("clip.") else v for k, v in sd.items()})
    method = _method(C4C_SEQ).eval()
    imported = load_into(method, path, C4C_SEQ)
    assert imported.origin == "clip4clip" and len(imported.sha256) == 64
    sd = {k: v.half().float() if k.startswith("clip.") else v for k, v in sd.items()}  # the file held fp16 CLIP
    ids, tmask, video, vmask = _inputs()
    with torch.no_grad():
        got = method.score(method.encode_text(ids, tmask), method.encode_video(video, vmask))
        text = ref.clip_text_tokens(sd, ids, HEADS, prefix="clip.")[torch.arange(3), tmask.sum(-1) - 1]
        frames = ref.seqtransf(_reference_frames(sd, video, vmask)[:, :, 0], vmask, sd, HEADS)
        want = ref.normalize(text) @ ref.mean_p(frames, vmask).t()
    torch.testing.assert_close(got, want, **TOL)


def test_clip4clip_meanp_equals_reference_forward(tmp_path) -> None:
    sd = _clip(seed=1)
    path = _save(tmp_path, sd)
    method = _method(C4C_MEANP).eval()
    assert load_into(method, path, C4C_MEANP).origin == "clip4clip"
    ids, tmask, video, vmask = _inputs()
    with torch.no_grad():
        got = method.score(method.encode_text(ids, tmask), method.encode_video(video, vmask))
        text = ref.clip_text_tokens(sd, ids, HEADS, prefix="clip.")[torch.arange(3), tmask.sum(-1) - 1]
        want = ref.normalize(text) @ ref.mean_p(_reference_frames(sd, video, vmask)[:, :, 0], vmask).t()
    torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(method.clip.logit_scale.detach(), sd["clip.logit_scale"])


# ------------------------------------------------------------------------------------------ DRL
def test_drl_wti_equals_reference_forward(tmp_path) -> None:
    sd = {**_clip(seed=2), **ref.seqtransf_state(64, 4, seed=6), **_wti("text_weight_fc", 64, 8)}
    sd.update(_wti("video_weight_fc", 64, 9))
    path = _save(tmp_path, sd)
    method = _method(DRL).eval()
    assert load_into(method, path, DRL).origin == "drl"
    ids, tmask, video, vmask = _inputs()
    with torch.no_grad():
        got = method.score(method.encode_text(ids, tmask), method.encode_video(video, vmask))
        t = ref.clip_text_tokens(sd, ids, HEADS, prefix="clip.")
        v = ref.seqtransf(_reference_frames(sd, video, vmask)[:, :, 0], vmask, sd, HEADS)
        wt = ref.wti_head(t, tmask, sd, "text_weight_fc")
        wv = ref.wti_head(v, vmask, sd, "video_weight_fc")
        want = ref.wti_scores(t, tmask, v, vmask, wt, wv)
    torch.testing.assert_close(got, want, **TOL)


# ------------------------------------------------------------------------------------------ EERCF
def test_eercf_heads_equal_reference_forward(tmp_path) -> None:
    g = torch.Generator().manual_seed(11)
    sd = {**_clip(seed=3), **ref.seqtransf_state(64, 4, seed=7)}
    sd["global_mat_weight"] = torch.eye(64) + 0.1 * torch.randn(64, 64, generator=g)
    sd["frame_logit_weight"] = torch.eye(8) + 0.2 * torch.randn(8, 8, generator=g)
    path = _save(tmp_path, sd)
    method = _method(EERCF).eval()
    assert load_into(method, path, EERCF).origin == "eercf"
    ids, tmask, video, vmask = _inputs()
    with torch.no_grad():
        text, vid = method.encode_text(ids, tmask), method.encode_video(video, vmask)
        coarse = method.score(text, vid)
        keys = ("frames_raw", "frames", "frame_mask", "patches")
        cands = torch.arange(3).expand(3, 3)
        fine = method._fine_fn(method.rerank_mix)(text, gather_candidates(vid, cands, keys), coarse)

        t = ref.normalize(ref.clip_text_tokens(sd, ids, HEADS, prefix="clip.")[torch.arange(3), tmask.sum(-1) - 1])
        tokens = _reference_frames(sd, video, vmask)
        raw = ref.normalize(tokens[:, :, 0])  # [B, T, D]
        patches = ref.normalize(tokens[:, :, 1:]).flatten(1, 2)  # [B, T*P, D]
        temporal = ref.normalize(ref.seqtransf(tokens[:, :, 0], vmask, sd, HEADS))
        s_video = (t @ sd["global_mat_weight"]) @ ref.mean_p(temporal, vmask).t()
        s = torch.einsum("id,vfd->ivf", t, raw)
        s_frame_weak = (s * (torch.softmax(s / 0.01, -1) @ sd["frame_logit_weight"])).sum(-1)
        u = ref.normalize(torch.einsum("ivf,vfd->ivd", torch.softmax(s / 0.1, -1), temporal))
        s_frame_tib = torch.einsum("id,ivd->iv", t, u)
        q = torch.einsum("id,vqd->ivq", t, patches)
        s_patch_weak = (q * torch.softmax(q / 0.01, -1)).sum(-1)
        want_fine = 0.5 * s_video + 0.8 * s_frame_weak + 0.2 * s_frame_tib + 0.2 * s_patch_weak
    torch.testing.assert_close(coarse, s_video, **TOL)
    torch.testing.assert_close(fine, want_fine, **TOL)


# ------------------------------------------------------------------------------------------ HCQ
def _hcq_head(dim: int = 64, levels: int = 3, m: int = 8, k: int = 32, seed: int = 4) -> dict[str, Tensor]:
    """HCQ's head with its names: NetVLAD ``ghost_vlad`` (1 ghost) and one PQLayer per level ('VQ' mode)."""
    g = torch.Generator().manual_seed(seed)
    sd = {
        "ghost_vlad.clusters": torch.randn(dim, levels + 1, generator=g) / dim**0.5,
        "ghost_vlad.clusters2": torch.randn(1, dim, levels, generator=g) / dim**0.5,
        "ghost_vlad.batch_norm.weight": 1 + 0.1 * torch.randn(levels, generator=g),
        "ghost_vlad.batch_norm.bias": 0.1 * torch.randn(levels, generator=g),
        "ghost_vlad.batch_norm.running_mean": 0.1 * torch.randn(levels, generator=g),
        "ghost_vlad.batch_norm.running_var": 0.5 + torch.rand(levels, generator=g),
        "ghost_vlad.batch_norm.num_batches_tracked": torch.tensor(17),
    }
    for i, name in enumerate(["cls_pq_layer", *(f"vlad_pq_layers.{j}" for j in range(levels))]):
        codebook = torch.nn.functional.normalize(torch.randn(m, k, dim // m, generator=g), dim=-1)
        sd[f"{name}._C_k"] = codebook
        sd[f"{name}._C_v"] = codebook  # the same Parameter registered twice in HCQ's VQ mode
        sd[f"{name}.BatchNorm.running_mean"] = torch.full((m,), 0.01 * i)
        sd[f"{name}.BatchNorm.running_var"] = torch.full((m,), 1.0 + i)
        sd[f"{name}.BatchNorm.num_batches_tracked"] = torch.tensor(5)
    return sd


def _hcq_container(tmp_path, state: dict[str, Tensor], name: str = "model_best.pth"):
    """HCQ's trainer checkpoint, whose ``config`` is an object of HCQ's own (unimportable here) class."""
    fake = types.ModuleType("parse_config")

    class ConfigParser:
        def __init__(self) -> None:
            self.config = {"arch": {"type": "HCQ"}, "loss": {"temperature": 0.05}}

    ConfigParser.__module__, ConfigParser.__qualname__ = "parse_config", "ConfigParser"
    fake.ConfigParser = ConfigParser
    sys.modules["parse_config"] = fake
    try:
        path = _save(
            tmp_path,
            {
                "arch": "HCQ",
                "epoch": 49,
                "state_dict": state,
                "optimizer": {},
                "monitor_best": 25.9,
                "config": ConfigParser(),
            },
            name,
        )
    finally:
        del sys.modules["parse_config"]
    return path


def test_hcq_on_clip_equals_reference_vlad_and_pq(tmp_path) -> None:
    sd = {**_clip(seed=4), **_hcq_head()}
    path = _hcq_container(tmp_path, sd)
    obj = read_checkpoint(path)  # HCQ's config object comes back as an inert placeholder
    assert obj["epoch"] == 49 and type(obj["config"]).__module__ == "parse_config"
    method = _method(HCQ).eval()
    assert load_into(method, path, HCQ).origin == "hcq"
    ids, tmask, video, _ = _inputs()
    full = torch.ones(3, 8, dtype=torch.long)  # every frame valid (see ref.netvlad)
    with torch.no_grad():
        vid = method.encode_video(video, full)
        txt = method.encode_text(ids, tmask)
        frames = _reference_frames(sd, video, full)[:, :, 0]
        levels = [ref.mean_p(frames, full), *ref.netvlad(frames, full, sd, "ghost_vlad", 3).unbind(1)]
        eot = ref.clip_text_tokens(sd, ids, HEADS, prefix="clip.")[torch.arange(3), tmask.sum(-1) - 1]
        books = [sd["cls_pq_layer._C_k"], *(sd[f"vlad_pq_layers.{j}._C_k"] for j in range(3))]
        # the shared GhostVLAD on word tokens (all-valid mask) through the imported module
        words = ref.clip_text_tokens(sd, ids, HEADS, prefix="clip.")
        got_words = method.vlad(words, torch.ones_like(tmask))
    for g, (level, book) in enumerate(zip(levels, books, strict=True)):
        sub = torch.nn.functional.normalize(level.reshape(3, 8, 8), dim=-1).reshape(3, 64)
        torch.testing.assert_close(vid["levels"][:, g], sub, **TOL)
        assert torch.equal(vid["codes"][:, g].long(), ref.pq_codes(level, book)), f"level {g}"
        assert torch.equal(method.quantizers[g].codebook, book)
    sub_eot = torch.nn.functional.normalize(eot.reshape(3, 8, 8), dim=-1).reshape(3, 64)
    torch.testing.assert_close(txt["levels"][:, 0], sub_eot, **TOL)
    assert torch.equal(txt["codes"][:, 0].long(), ref.pq_codes(eot, books[0]))
    torch.testing.assert_close(got_words, ref.netvlad(words, torch.ones_like(tmask), sd, "ghost_vlad", 3), **TOL)
    assert int(method.vlad.bn.num_batches_tracked) == 17


# ------------------------------------------------------------------------------------------ refusals
def test_wrong_variant_or_method_names_the_recipe_that_fits(tmp_path) -> None:
    meanp = _save(tmp_path, _clip(), "meanp.bin")
    with pytest.raises(CheckpointError) as err:
        load_into(_method(C4C_SEQ), meanp, C4C_SEQ)
    msg = str(err.value)
    assert "nothing was loaded" in msg and "file has none (meanP" in msg and C4C_MEANP in msg

    drl = _save(
        tmp_path,
        {**_clip(), **ref.seqtransf_state(64, 4), **_wti("text_weight_fc", 64, 1), **_wti("video_weight_fc", 64, 2)},
        "drl.bin",
    )
    with pytest.raises(CheckpointError) as err:
        load_into(_method(C4C_SEQ), drl, C4C_SEQ)
    assert "WTI heads the recipe does not use" in str(err.value) and DRL in str(err.value)

    hcq = _hcq_container(tmp_path, {**_clip(), **_hcq_head()})
    with pytest.raises(CheckpointError) as err:
        load_into(_method(EERCF), hcq, EERCF)
    assert "HCQ's head: the recipe is not HCQ" in str(err.value) and HCQ in str(err.value)

    eercf12 = {**_clip(), **ref.seqtransf_state(64, 4), "global_mat_weight": torch.eye(64)}
    eercf12["frame_logit_weight"] = torch.eye(12)
    path = _save(tmp_path, eercf12, "eercf12.bin")
    with pytest.raises(CheckpointError, match=r"frame_logit_weight: file \(12, 12\) vs recipe \(8, 8\).*max_frames"):
        load_into(_method(EERCF), path, EERCF)
    method = _method(EERCF, "data.max_frames=12")
    assert load_into(method, path, EERCF).origin == "eercf"  # the fix the message names works

    deep = _save(tmp_path, {**_clip(), **ref.seqtransf_state(64, 2)}, "two_blocks.bin")
    with pytest.raises(CheckpointError, match="seqTransf has 2 blocks: set method.temporal_layers"):
        load_into(_method(C4C_SEQ), deep, C4C_SEQ)
    assert load_into(_method(C4C_SEQ, "method.temporal_layers=2"), deep, C4C_SEQ).origin == "clip4clip"

    mmt = {**_hcq_head(), "vid_bert.encoder.layer.0.output.dense.weight": torch.zeros(2, 2)}
    mmt["txt_bert.embeddings.word_embeddings.weight"] = torch.zeros(2, 2)
    path = _hcq_container(tmp_path, mmt, "mmt.pth")
    with pytest.raises(CheckpointError, match="HCQ-on-MMT-features checkpoint"):
        load_into(_method(HCQ), path, HCQ)

    with pytest.raises(CheckpointError, match="model.clip="):
        detect(_clip_plain(), tmp_path / "ViT-B-32.pt")
    bad = tmp_path / "broken.bin"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read it as a PyTorch checkpoint"):
        read_checkpoint(bad)


def _clip_plain() -> dict[str, Tensor]:
    return {k[len("clip.") :]: v for k, v in _clip().items()}


def test_converted_file_keeps_its_origin_and_loads_identically(tmp_path) -> None:
    sd = {**_clip(seed=9), **ref.seqtransf_state(64, 4, seed=3)}
    path = _save(tmp_path, sd)
    method = _method(C4C_SEQ).eval()
    first = load_into(method, path, C4C_SEQ)
    out = write_converted(first, tmp_path / "converted.ckpt", C4C_SEQ, {"run": {"name": C4C_SEQ}})
    again = _method(C4C_SEQ).eval()
    second = load_into(again, out, C4C_SEQ)
    assert second.origin == "clip4clip" and second.source == {"path": str(path), "sha256": first.sha256}
    assert second.record()["path"] == str(out) and second.sha256 != first.sha256
    for (k, a), (_, b) in zip(method.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(CheckpointError, match=f"converted for recipe {C4C_SEQ}"):
        load_into(_method(C4C_MEANP), out, C4C_MEANP)


def test_schema_checks_the_checkpoint_entry() -> None:
    from vidbench.results.schema import result_problems

    base = {
        "schema_version": 1,
        "recipe": "r",
        "method": "clip4clip",
        "method_label": "CLIP4Clip (meanP)",
        "seed": 0,
        "dataset": "msrvtt",
        "split": "test-1ka",
        "protocols": {
            "base": {
                "metrics": {
                    k: 1.0
                    for k in (
                        "t2v_R1",
                        "t2v_R5",
                        "t2v_R10",
                        "t2v_MdR",
                        "t2v_MnR",
                        "v2t_R1",
                        "v2t_R5",
                        "v2t_R10",
                        "v2t_MdR",
                        "v2t_MnR",
                    )
                }
            }
        },
    }
    good = {"origin": "hcq", "path": "/x/model_best.pth", "sha256": "a" * 64}
    assert result_problems({**base, "checkpoint": good}) == []
    assert result_problems({**base, "checkpoint": None}) == []
    bad = result_problems({**base, "checkpoint": {"origin": "xclip", "path": "", "sha256": "ABC"}})
    assert len(bad) == 3 and "checkpoint.origin" in bad[0] and "checkpoint.path" in bad[1] and "sha256" in bad[2]
    assert result_problems({**base, "checkpoint": "/x/last.ckpt"}) == []  # records from before the entry existed
    assert result_problems({**base, "checkpoint": 3})


def test_a_vidbench_checkpoint_without_clip_is_still_recognised(tmp_path) -> None:
    """Methods without a CLIP backbone (HCQ on MMT features) write Lightning checkpoints with no clip.* keys."""
    path = _save(
        tmp_path,
        {"pytorch-lightning_version": "2.6", "state_dict": {"video_mmt.w": torch.zeros(2)}, "epoch": 3},
        "last.ckpt",
    )
    det = detect(read_checkpoint(path), path)
    assert det.origins == ("vidbench",) and set(det.state) == {"video_mmt.w"}


# ------------------------------------------------------------------------------------------ HCQ on MMT
HCQ_MMT = "hcq-mmt-l7-m32_bert_b32_50e_activitynet"  # two experts (s3d, vggish): the smallest MMT preset
MMT_EXPERTS = {"s3d": 1024, "vggish": 128}
MMT_TYPES = {"s3d": 1, "vggish": 2}  # their token-type ids (spec hcq-original.md §1.4)


def _hcq_mmt_method(tmp_path):
    """The ActivityNet recipe shrunk to a tiny BERT (width 32) and a tiny MMT (width 16), L=2, M=4, K=8."""
    from tests.mmt_fixtures import write_tiny_bert_vocab
    from tests.test_hcq_mmt import tiny_mmt

    vocab = write_tiny_bert_vocab(tmp_path / "vocab" / "vocab.txt")
    return _method(HCQ_MMT, *tiny_mmt(tmp_path, vocab.parent, tmp_path / "runs")).eval()


def _hcq_mmt_state() -> dict[str, Tensor]:
    """A whole HCQ-on-MMT state dict with the reference's names, sized like :func:`_hcq_mmt_method`."""
    encoders = ref.hcq_mmt_encoders_state(
        MMT_EXPERTS,
        vocab=43,
        text_width=32,
        text_layers=2,
        text_positions=128,
        width=16,
        video_layers=2,
        video_positions=32,
    )
    return {**encoders, **_hcq_head(dim=16, levels=2, m=4, k=8)}


def _mmt_video(batch: int = 3, tokens: int = 3) -> dict[str, dict[str, Tensor]]:
    """Expert inputs with padded rows, a missing expert (vggish of sample 1) and times past the last position."""
    g = torch.Generator().manual_seed(11)
    out: dict[str, dict[str, Tensor]] = {"features": {}, "features_t": {}, "features_ind": {}, "features_maxpool": {}}
    for name, dim in MMT_EXPERTS.items():
        ind = torch.ones(batch, tokens)
        ind[2, -1] = 0  # a padded row
        if name == "vggish":
            ind[1] = 0
        rows = torch.randn(batch, tokens, dim, generator=g) * ind[..., None]
        out["features"][name] = rows
        out["features_t"][name] = (torch.rand(batch, tokens, generator=g) * 40 + 1) * ind + (1 - ind)
        out["features_ind"][name] = ind
        out["features_maxpool"][name] = rows.max(dim=1).values
    return out


def test_hcq_on_mmt_equals_reference_encoders_vlad_and_pq(tmp_path) -> None:
    sd = _hcq_mmt_state()
    path = _hcq_container(tmp_path, sd)
    method = _hcq_mmt_method(tmp_path)
    imported = load_into(method, path, HCQ_MMT)
    assert imported.origin == "hcq" and any("poolers" in n for n in imported.notes)
    ids = torch.tensor([[3, 7, 9, 12, 4, 0, 0], [3, 20, 31, 5, 8, 11, 4], [3, 40, 4, 0, 0, 0, 0]])
    tmask = (ids > 0).long()
    video = _mmt_video()
    with torch.no_grad():
        txt = method.encode_text(ids, tmask)
        vid = method.encode_video_batch(video)
        t_coarse, t_tokens = ref.hcq_mmt_text(sd, ids, tmask, heads=2)
        words = tmask.clone()
        words[:, 0] = 0  # [CLS] out, [SEP] in
        t_levels = [t_coarse, *ref.netvlad_masked(t_tokens, words, sd, "ghost_vlad", 2).unbind(1)]
        v_coarse, v_tokens, v_mask = ref.hcq_mmt_video(
            sd, video["features"], video["features_t"], video["features_ind"], video["features_maxpool"],
            MMT_TYPES, heads=2,
        )  # fmt: skip
        v_levels = [v_coarse, *ref.netvlad_masked(v_tokens, v_mask, sd, "ghost_vlad", 2).unbind(1)]
    books = [sd["cls_pq_layer._C_k"], *(sd[f"vlad_pq_layers.{j}._C_k"] for j in range(2))]
    for g, book in enumerate(books):
        assert torch.equal(method.quantizers[g].codebook, book)
        for got, level in ((txt, t_levels[g]), (vid, v_levels[g])):
            sub = torch.nn.functional.normalize(level.reshape(3, 4, 4), dim=-1).reshape(3, 16)
            torch.testing.assert_close(got["levels"][:, g], sub, **TOL)
            assert torch.equal(got["codes"][:, g].long(), ref.pq_codes(level, book)), f"level {g}"
    assert int(method.text_experts.text_GU["s3d"].cg.batch_norm.num_batches_tracked) == 9


def test_hcq_variants_are_refused_by_the_other_family_all_or_nothing(tmp_path) -> None:
    method = _hcq_mmt_method(tmp_path)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    clip_file = _hcq_container(tmp_path, {**_clip(), **_hcq_head()}, "clip.pth")
    with pytest.raises(CheckpointError) as err:
        load_into(method, clip_file, HCQ_MMT)
    msg = str(err.value)
    assert "which the file lacks: it is HCQ on CLIP" in msg and "an HCQ-on-CLIP checkpoint" in msg
    assert f"recipes that fit this file: {HCQ}" in msg

    sd = _hcq_mmt_state()
    mmt_file = _hcq_container(tmp_path, sd, "mmt.pth")
    with pytest.raises(CheckpointError) as err:
        load_into(_method(HCQ), mmt_file, HCQ)
    msg = str(err.value)
    assert "HCQ-on-MMT-features checkpoint, not HCQ on CLIP" in msg and "MMT video transformer + BERT" in msg
    assert "use a recipe of method hcq_mmt (recipes/hcq-mmt/)" in msg and "L=2 M=4 K=8" in msg

    del sd["vid_bert.encoder.layer.1.output.dense.bias"]
    sd["moe_fc_txt.audio.weight"] = torch.zeros(1, 32)  # an expert the recipe does not have
    broken = _hcq_container(tmp_path, sd, "broken.pth")
    with pytest.raises(CheckpointError) as err:
        load_into(method, broken, HCQ_MMT)
    msg = str(err.value)
    bias = "vid_bert.encoder.layer.1.output.dense.bias"
    missing = f"{bias} (vidbench: video_mmt.{bias})"
    assert f"1 key(s) missing from the file, e.g. {missing}" in msg  # the file's own name, vidbench's beside it
    assert "with other experts or depth than the recipe's, or an incomplete file" in msg
    assert "moe_fc_txt.audio.weight (vidbench: text_experts.moe_fc_txt.audio.weight): HCQ's MMT/BERT" in msg
    assert all(torch.equal(v, before[k]) for k, v in method.state_dict().items())  # nothing was loaded


def test_recipes_that_fit_an_hcq_file_follow_its_encoders() -> None:
    from vidbench.reference_ckpt import Detected, fitting_recipes

    mmt = Detected(("hcq",), {}, {}, hcq=(7, 32, 256), hcq_encoders="mmt")
    fits = fitting_recipes(mmt, limit=100)
    assert "hcq-mmt-l7-m32_bert_b128_50e_msrvtt-1ka" in fits and all(r.startswith("hcq-mmt-l7-m32") for r in fits)
    clip = Detected(("hcq",), {}, {}, hcq=(7, 32, 256), hcq_encoders="clip", patch_size=32)
    assert not any(r.startswith("hcq-mmt") for r in fitting_recipes(clip, limit=100))
