"""Refusals of reference checkpoints speak the file's own key names, and seqTransf follows the CLIP's context.

A refused file is explained in its own words (``clip.visual.ln_post.bias``, ``cls_pq_layer._C_k``), with
vidbench's name beside it; the suggested fix never sends the user back to the recipe that just refused the file;
a file missing one tensor while every shape matches is called incomplete, not "another CLIP architecture".
"""

from __future__ import annotations

import pytest
import torch

from tests import reference_forward as ref
from tests.test_reference_ckpt import C4C_MEANP, C4C_SEQ, EERCF, HCQ, _clip, _hcq_container, _hcq_head, _method, _save
from vidbench.models.openai_clip import hf_to_openai, openai_to_hf
from vidbench.reference_ckpt import CheckpointError, _map_reference, file_key, load_into


def refusal(method, path, recipe: str) -> tuple[str, str]:
    """(reason, fix) of the refusal ``load_into`` raises."""
    with pytest.raises(CheckpointError) as err:
        load_into(method, path, recipe)
    reason, _, fix = str(err.value).partition("\n  fix: ")
    assert fix, str(err.value)
    return reason, fix


def c4c_seq_file() -> dict[str, torch.Tensor]:
    return {**_clip(), **ref.seqtransf_state(64, 4, seed=5)}


def test_one_missing_key_is_named_as_in_the_file_and_called_incomplete(tmp_path) -> None:
    sd = c4c_seq_file()
    del sd["clip.visual.ln_post.bias"]
    reason, fix = refusal(_method(C4C_SEQ), _save(tmp_path, sd), C4C_SEQ)
    assert "1 key(s) missing from the file, e.g. clip.visual.ln_post.bias" in reason
    assert "(vidbench: clip.model.vision_model.post_layernorm.bias)" in reason
    assert "another CLIP architecture" not in reason and "incomplete" in reason
    assert C4C_SEQ not in fix and "re-save it" in fix


def test_one_left_over_key_is_named_as_in_the_file(tmp_path) -> None:
    sd = c4c_seq_file()
    sd["clip.transformer.resblocks.2.ln_1.weight"] = torch.ones(64)  # a third text block the recipe lacks
    reason, fix = refusal(_method(C4C_SEQ), _save(tmp_path, sd), C4C_SEQ)
    assert "1 key(s) left over in the file, e.g. clip.transformer.resblocks.2.ln_1.weight" in reason
    assert "(vidbench: clip.model.text_model.encoder.layers.2.layer_norm1.weight)" in reason
    assert C4C_SEQ not in fix

    sd = c4c_seq_file()
    sd["cross.embeddings.word_embeddings.weight"] = torch.zeros(2, 64)  # tightTransf's cross encoder
    reason, fix = refusal(_method(C4C_SEQ), _save(tmp_path, sd, "cross.bin"), C4C_SEQ)
    assert "e.g. cross.embeddings.word_embeddings.weight: the cross encoder of CLIP4Clip's tightTransf" in reason
    assert C4C_SEQ not in fix


def test_wrong_method_names_the_file_keys_and_another_recipe(tmp_path) -> None:
    g = torch.Generator().manual_seed(1)
    sd = {**c4c_seq_file(), "global_mat_weight": torch.eye(64), "frame_logit_weight": torch.eye(8)}
    sd["global_mat_weight"] += 0.01 * torch.randn(64, 64, generator=g)
    reason, fix = refusal(_method(C4C_SEQ), _save(tmp_path, sd, "eercf.bin"), C4C_SEQ)
    assert "left over in the file, e.g. frame_logit_weight, global_mat_weight: EERCF's heads" in reason
    assert C4C_SEQ not in fix and EERCF in fix

    hcq = _hcq_container(tmp_path, {**_clip(), **_hcq_head()})
    reason, fix = refusal(_method(C4C_MEANP), hcq, C4C_MEANP)
    assert "cls_pq_layer.BatchNorm.running_mean (vidbench: quantizers.0.bn.running_mean)" in reason
    assert "23 key(s) left over" in reason and "the recipe is not HCQ" in reason
    assert C4C_MEANP not in fix and HCQ in fix


def test_file_key_inverts_the_reference_mapping() -> None:
    """Every tensor of reference files (CLIP4Clip + seqTransf + EERCF heads, HCQ's head) maps to a vidbench key
    whose file_key is the tensor's own name again (q/k/v come from the one packed in_proj)."""
    sd = {**c4c_seq_file(), "global_mat_weight": torch.eye(64), **_hcq_head()}
    leftover: list[str] = []
    mapped = _map_reference(sd, leftover, [])
    assert not leftover
    assert {file_key(k) for k in mapped} == set(sd) - {k for k in sd if k.endswith("._C_v")}
    hf = openai_to_hf(ref.openai_clip_state(width=64, layers=1, vocab=64, patch=8, grid=2))
    assert (
        hf_to_openai("text_model.encoder.layers.0.self_attn.k_proj.bias") == "transformer.resblocks.0.attn.in_proj_bias"
    )
    assert all(hf_to_openai(k) is not None for k in hf)


def test_seqtransf_positions_follow_the_clip_context_and_such_a_checkpoint_loads(tmp_path) -> None:
    """A CLIP with a 40-token context: the reference builds a 40-row frame position table, so its checkpoint
    has one; vidbench builds the same and loads it (a fixed 77-row table would refuse it)."""
    backbone = ref.openai_clip_state(width=64, layers=2, vocab=4096, patch=8, grid=4, context=40, seed=2)
    backbone |= {"input_resolution": torch.tensor(32), "context_length": torch.tensor(40)}
    backbone["vocab_size"] = torch.tensor(4096)
    archive = tmp_path / "ViT-T-8.pt"
    torch.save(backbone, archive)
    method = _method(C4C_SEQ, f"model.clip={archive}").eval()
    assert method.clip.max_text_length == 40
    assert tuple(method.temporal.frame_position_embeddings.weight.shape) == (40, 64)
    sd = {f"clip.{k}": v for k, v in backbone.items() if k not in ("input_resolution", "context_length", "vocab_size")}
    sd |= ref.seqtransf_state(64, 4, seed=9, positions=40)
    assert load_into(method, _save(tmp_path, sd), C4C_SEQ).origin == "clip4clip"
    torch.testing.assert_close(
        method.temporal.frame_position_embeddings.weight.detach(), sd["frame_position_embeddings.weight"]
    )
