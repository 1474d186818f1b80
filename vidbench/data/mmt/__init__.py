"""HCQ's original inputs: the MMT multi-modal expert features (MSRVTT 1k-A/1k-B/full, LSMDC, ActivityNet).

Public interface (Lightning-free, no model code):

* ``MmtFeatureDataset(root, dataset, cut, split, tokenizer, *, policy="fail", seed=0, length=None)``:
  a torch Dataset over one split. ``root`` is the dataset folder that holds ``symlinked-feats/`` and
  ``vid_feat_files/mult_h5/``; ``(dataset, cut)`` is one of ``msrvtt/jsfusion`` (1k-A), ``msrvtt/miech``
  (1k-B), ``msrvtt/full``, ``lsmdc/full``, ``activitynet/val1``; ``split`` is ``trainval``/``train``
  (training: random caption, random token subset) or ``val``/``test`` (deterministic). Each sample is::

      {"video_id": str, "index": long[],             # index into dataset.video_ids
       "token_ids": long[W], "token_mask": long[W],  # BERT ids ([CLS] ... [SEP], 0-padded), mask 1 on tokens
       "features": {e: float[T, D_e]},               # experts sorted by name; missing expert = zeros
       "features_t": {e: float[T]},                  # centre seconds + 2; 1 = unknown time / padding
       "features_ind": {e: float[T]},                # 1 on kept rows, 0 on padding and for a missing expert
       "features_maxpool": {e: float[D_e]},          # over all rows, before sampling ([AGG] input)
       "features_avgpool": {e: float[D_e]}}

  ``collate_mmt`` stacks samples (``video_id`` becomes a list). ``dataset.preset`` gives experts/dims, T
  (``max_tokens``), W (``max_words``) and the query modes; ``dataset.video_ids`` the kept ids in order;
  ``text_report()`` the ``data.text.<split>`` counts; ``data_report()`` the skip counts; ``set_epoch(e)``
  reseeds training draws per epoch.
* ``MMT_PRESETS`` / ``get_preset``: per dataset/cut experts, T, W, training/test split and query mode.
* ``split_ids``, ``h5_path``, ``read_mmt_h5`` (``MmtFileError``): the on-disk layout, for verification tools.
* ``missing_release_message(root, dataset, cut)``: None when the release looks extracted under ``root``,
  else one line naming the folder to fill and the tarball (for suites that skip HCQ-MMT recipes).
* ``vidbench.data.mmt.sampling``: the pure loader rules (timings, token choice, pools, queries).

The BERT query tokenizer lives in :mod:`vidbench.data.bert_text` (``load_bert_tokenizer``).
"""

from vidbench.data.mmt.dataset import MmtFeatureDataset, collate_mmt
from vidbench.data.mmt.h5file import MmtFileError, MmtVideoRecord, read_mmt_h5
from vidbench.data.mmt.layout import (
    MMT_PRESETS,
    MmtPreset,
    get_preset,
    h5_path,
    missing_release_message,
    split_ids,
)

__all__ = [
    "MMT_PRESETS",
    "MmtFeatureDataset",
    "MmtFileError",
    "MmtPreset",
    "MmtVideoRecord",
    "collate_mmt",
    "get_preset",
    "h5_path",
    "missing_release_message",
    "read_mmt_h5",
    "split_ids",
]
