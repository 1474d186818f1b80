"""The MMT video transformer on given tensors, against a brute-force computation of the spec's formulas."""

from __future__ import annotations

import math

import pytest
import torch

from tests.mmt_fixtures import write_msrvtt, write_tiny_bert_vocab
from vidbench.data.bert_text import BertQueryTokenizer
from vidbench.data.mmt import MmtFeatureDataset, collate_mmt
from vidbench.errors import ConfigError
from vidbench.models.mmt import (
    EXPERT_TOKEN_TYPES,
    MMT_VIDEO_CONFIGS,
    MmtVideoEncoder,
    ReduceDim,
    tiny_mmt_config,
)

DIMS = {"vggish": 3, "face": 5, "s3d": 6}  # deliberately unsorted
T = 4


def _inputs(b: int = 3, seed: int = 0) -> tuple[dict, dict, dict, dict]:
    g = torch.Generator().manual_seed(seed)
    feats, times, ind, maxpool = {}, {}, {}, {}
    for e, d in DIMS.items():
        feats[e] = torch.randn(b, T, d, generator=g)
        times[e] = torch.tensor([[2.5, 3.5, 60.0, 1.0]] * b)  # 60 s saturates at P - 1
        ind[e] = torch.tensor([[1.0, 1.0, 1.0, 0.0]] * b)
        feats[e][:, 3] = 0  # padding row
        maxpool[e] = torch.randn(b, d, generator=g)
    # sample 1 misses face entirely; sample 2 has a single vggish row
    feats["face"][1], ind["face"][1], maxpool["face"][1], times["face"][1] = 0, 0, 0, 1
    ind["vggish"][2] = torch.tensor([1.0, 0, 0, 0])
    times["face"][:] = 1.0  # face is untimed
    times["face"][1] = 1.0
    return feats, times, ind, maxpool


@pytest.fixture(scope="module")
def enc() -> MmtVideoEncoder:
    torch.manual_seed(0)
    return MmtVideoEncoder(DIMS, tiny_mmt_config()).eval()


def test_sequence_layout(enc) -> None:
    feats, times, ind, maxpool = _inputs()
    x, pos, types, mask, aggs = enc.build_sequence(feats, times, ind, maxpool)
    assert enc.experts == ["face", "s3d", "vggish"]
    assert x.shape == (3, enc.sequence_length(T), 16) == (3, 16, 16) and aggs == [1, 6, 11]
    assert pos[0].tolist() == [0] + [0, 1, 1, 1, 1] + [0, 2, 3, 31, 1] * 2  # floor(t), clamp at 31, CLS/AGG 0
    assert types[0].tolist() == [0] + [3] * 5 + [1] * 5 + [2] * 5
    assert mask[0].tolist() == [1] + [1, 1, 1, 1, 0] * 3
    assert mask[1, 1:6].tolist() == [0] * 5  # missing expert: [AGG] and rows masked
    assert mask[2, 11:16].tolist() == [1, 1, 0, 0, 0]
    assert torch.all(x[:, 0] == 0)
    fc = enc.video_dim_reduce["s3d"].fc
    torch.testing.assert_close(x[:, 6], torch.nn.functional.normalize(maxpool["s3d"] @ fc.weight.T + fc.bias, dim=-1))
    torch.testing.assert_close(
        x[0, 7], torch.nn.functional.normalize(feats["s3d"][0, 0] @ fc.weight.T + fc.bias, dim=0)
    )
    # a zero (padding) row maps to normalize(bias), a non-zero unit vector
    torch.testing.assert_close(x[0, 10], torch.nn.functional.normalize(fc.bias, dim=0))


def _layer_norm(x: torch.Tensor, ln: torch.nn.LayerNorm) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _brute_force(enc: MmtVideoEncoder, x: torch.Tensor, pos, types, mask) -> torch.Tensor:
    """Embedding LN(pos + type + feature), then post-LN layers with per-head loops and the -10000 key mask."""
    bert = enc.vid_bert
    emb = bert.embeddings
    h = _layer_norm(emb.position_embeddings.weight[pos] + emb.token_type_embeddings.weight[types] + x, emb.layer_norm)
    heads = enc.config.num_attention_heads
    d = enc.config.hidden_size // heads
    for layer in bert.encoder.layer:
        att = layer.attention.self
        q = h @ att.query.weight.T + att.query.bias
        k = h @ att.key.weight.T + att.key.bias
        v = h @ att.value.weight.T + att.value.bias
        ctx = torch.zeros_like(h)
        for b in range(h.shape[0]):
            for hd in range(heads):
                sl = slice(hd * d, (hd + 1) * d)
                scores = q[b, :, sl] @ k[b, :, sl].T / math.sqrt(d)
                scores = scores + (1 - mask[b].float())[None, :] * -10000.0
                probs = torch.exp(scores - scores.max(-1, keepdim=True).values)
                probs = probs / probs.sum(-1, keepdim=True)
                ctx[b, :, sl] = probs @ v[b, :, sl]
        out = layer.attention.output
        a = _layer_norm(ctx @ out.dense.weight.T + out.dense.bias + h, out.layer_norm)
        inter = a @ layer.intermediate.dense.weight.T + layer.intermediate.dense.bias
        inter = 0.5 * inter * (1 + torch.erf(inter / math.sqrt(2)))
        h = _layer_norm(inter @ layer.output.dense.weight.T + layer.output.dense.bias + a, layer.output.layer_norm)
    return h


def test_forward_matches_brute_force(enc) -> None:
    feats, times, ind, maxpool = _inputs()
    with torch.no_grad():
        out = enc(feats, times, ind, maxpool)
        x, pos, types, mask, aggs = enc.build_sequence(feats, times, ind, maxpool)
        ref = _brute_force(enc, x, pos, types, mask)
    torch.testing.assert_close(out.tokens, ref, rtol=1e-4, atol=1e-5)
    ref_agg = torch.nn.functional.normalize(ref[:, aggs], dim=-1)
    torch.testing.assert_close(out.agg, ref_agg, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.coarse, ref_agg.mean(1), rtol=1e-4, atol=1e-5)  # all experts, missing included
    assert torch.equal(out.attention_mask, mask)
    expected_vlad = mask.clone()
    expected_vlad[:, [0, 1, 6, 11]] = 0
    assert torch.equal(out.vlad_mask, expected_vlad)
    assert int(out.vlad_mask[1].sum()) == 6 and int(out.vlad_mask[2].sum()) == 7


def test_masked_slots_are_excluded_only_as_keys(enc) -> None:
    feats, times, ind, maxpool = _inputs()
    with torch.no_grad():
        base = enc(feats, times, ind, maxpool)
        changed = {e: f.clone() for e, f in feats.items()}
        changed["s3d"][:, 3] = 5.0  # a masked (padding) row
        other = enc(changed, times, ind, maxpool)
    unmasked = base.attention_mask.bool()
    torch.testing.assert_close(base.tokens[unmasked], other.tokens[unmasked])
    assert not torch.allclose(base.tokens[:, 10], other.tokens[:, 10])  # the masked slot's own output changes
    # a missing expert's [AGG] still yields a unit output that enters the coarse mean
    torch.testing.assert_close(base.agg[1, 0].norm(), torch.tensor(1.0))


def test_initialisation_and_configs() -> None:
    torch.manual_seed(0)
    enc = MmtVideoEncoder({"rgb": 2048}, tiny_mmt_config(hidden_size=64, intermediate_size=256))
    layer = enc.vid_bert.encoder.layer[0]
    assert abs(float(layer.intermediate.dense.weight.detach().std()) - 0.02) < 0.002
    assert float(layer.intermediate.dense.bias.detach().abs().sum()) == 0
    assert torch.all(layer.output.layer_norm.weight == 1)
    assert not any("pooler" in n for n, _ in enc.named_parameters())
    assert isinstance(enc.video_dim_reduce["rgb"], ReduceDim)
    assert "vid_bert.encoder.layer.0.attention.self.query.weight" in enc.state_dict()
    seven = dict.fromkeys(EXPERT_TOKEN_TYPES, 8)
    assert MmtVideoEncoder(seven, tiny_mmt_config()).sequence_length(30) == 218
    assert MmtVideoEncoder({"s3d": 8, "vggish": 8}, tiny_mmt_config()).sequence_length(100) == 203
    assert MMT_VIDEO_CONFIGS["lsmdc"].hidden_dropout_prob == 0.0
    assert MMT_VIDEO_CONFIGS["activitynet"].max_position_embeddings == 102
    assert (MMT_VIDEO_CONFIGS["msrvtt"].hidden_size, MMT_VIDEO_CONFIGS["msrvtt"].num_hidden_layers) == (512, 4)
    with pytest.raises(ConfigError, match="no token type"):
        MmtVideoEncoder({"audio": 4}, tiny_mmt_config())
    with pytest.raises(ConfigError, match="multiple"):
        tiny_mmt_config(hidden_size=15)


def test_runs_on_a_fixture_batch(tmp_path) -> None:
    fx = write_msrvtt(tmp_path / "MSRVTT")
    tok = BertQueryTokenizer(write_tiny_bert_vocab(tmp_path / "vocab.txt"))
    data = MmtFeatureDataset(fx.root, "msrvtt", "miech", "test", tok)
    batch = collate_mmt([data[i] for i in range(len(data))])
    torch.manual_seed(0)
    enc = MmtVideoEncoder(data.experts, tiny_mmt_config()).eval()
    with torch.no_grad():
        out = enc(batch["features"], batch["features_t"], batch["features_ind"], batch["features_maxpool"])
    assert out.tokens.shape == (3, 218, 16) and out.agg.shape == (3, 7, 16)
    rows = sum(int(batch["features_ind"][e].sum()) for e in data.experts)
    assert int(out.vlad_mask.sum()) == rows
