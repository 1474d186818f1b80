"""What each evaluation protocol means: one precise sentence per protocol name, and its kind.

The leaderboard never puts two protocols in one column, so a reader must be told what each one is: what
is scored, what the index stores per video, and whether it is transductive (uses every test query at
once) or oracle-selected (a checkpoint chosen on the test split). Names follow the writers in
``vidbench/methods`` (``base``, ``dsl``, EERCF's ``rerank@k`` / ``rerank@k-frames``, HCQ's ``dense`` /
``v2t-codes`` / ``faiss``), combined with ``+dsl`` and the ``@best-on-test`` selection suffix. A method
outside this repository records its own sentence in ``result.json`` (``ScoringProtocol.description``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ORACLE_SUFFIX = "@best-on-test"
_RERANK = re.compile(r"rerank@(\d+)(-frames)?")


@dataclass(frozen=True)
class ProtocolInfo:
    """A protocol's sentence and the two flags that decide where its rows go in the headline."""

    name: str
    sentence: str
    transductive: bool
    oracle: bool
    extra_data: bool = False  # uses data beyond the test split at test time (QB-Norm's training-caption bank)

    @property
    def set_apart(self) -> bool:
        """Rows that must not be ranked with the others: transductive, oracle-selected or using extra data."""
        return self.transductive or self.oracle or self.extra_data


def split_selection(name: str, selection: str | None = None) -> tuple[str, bool]:
    """(protocol without the selection suffix, oracle?) from a name and its record's ``selection``."""
    oracle = selection == "best-on-test" or name.endswith(ORACLE_SUFFIX)
    return (name[: -len(ORACLE_SUFFIX)] if name.endswith(ORACLE_SUFFIX) else name), oracle


def _core_sentence(core: str, method: str | None) -> str | None:
    if core == "base":
        if method == "hcq":
            return (
                "HCQ's main protocol: each text query is scored against the gallery's uint8 product-quantisation "
                "codes by asymmetric distance (per-query lookup tables over each level's codebooks); the index "
                "stores (L+1)·M bytes per video; not transductive."
            )
        if method == "eercf":
            return (
                "EERCF's single-stage coarse protocol: one dot product between the text vector and the video's "
                "coarse vector, no re-ranking; the index stores one vector per video; not transductive."
            )
        return (
            "the papers' standard protocol: each text query is scored against every test video by the method's "
            "own similarity, and the raw score matrix is ranked; the index stores the method's per-video "
            "features; not transductive."
        )
    if core == "dsl":
        return (
            "dual softmax over the whole text × video score matrix before ranking (temperature 100): every "
            "query's ranking depends on all the other test queries, so it is transductive and not comparable "
            "with `base`; the index stores the same per-video features as `base`."
        )
    if core == "sinkhorn":
        return (
            "Sinkhorn normalisation of the whole text × video score matrix before ranking: exp(100 · S) is "
            "scaled 20 times, columns to each video's caption count and rows to one, and the transport plan "
            "is ranked; every query's ranking depends on all the other test queries, so it is transductive "
            "and not comparable with `base`; the cost adds the scaling per query; the index stores the same "
            "per-video features as `base`."
        )
    if core == "qbnorm":
        return _QBNORM_SENTENCE
    m = _RERANK.fullmatch(core)
    if m:
        k, frames_only = m.group(1), bool(m.group(2))
        stored = "coarse vector plus frame features" if frames_only else "coarse vector plus frame and patch features"
        return (
            f"EERCF's two-stage retrieval: the top {k} videos by the coarse score are re-ranked by the "
            f"text-gated fine interaction{' without patch features' if frames_only else ''}; the index stores "
            f"the {stored} per video; not transductive."
        )
    if core == "dense":
        return (
            "HCQ without quantisation: the text's level vectors against the videos' unquantised level vectors "
            "(float32, dense dot products); the index stores L+1 float vectors per video; not transductive; "
            "shows what quantising costs in accuracy."
        )
    if core == "v2t-codes":
        return (
            "HCQ with the text side quantised instead: video queries are scored against the texts' product-"
            "quantisation codes (the reference's v2t evaluation); the index stores L+1 float vectors per video; "
            "not transductive."
        )
    if core == "faiss":
        return (
            "HCQ's code-based retrieval served from the exported FAISS product-quantisation index (same codes "
            "and top-k as `base`); the index stores the packed codes per video; not transductive."
        )
    return None


_QBNORM_SENTENCE = (
    "QB-Norm with the dynamic inverted softmax (Bogolin et al., CVPR 2022; β = 20, k = 1 as the authors' "
    "release): a bank of training-split captions (5,000 drawn at random by default, `eval.qbnorm_bank`; the "
    "release uses every training caption) is scored against the test gallery, and a text query whose top "
    "video is in some bank query's top k gets exp(β s) divided by that video's bank sum; not transductive on "
    "the test queries but it uses extra data (the training captions, encoded at test time: the bank's "
    "encoding and scoring are a one-time cost recorded with the row); v2t is left unnormalised; the index "
    "stores `base`'s features plus 5 bytes per video."
)
_POST_SUFFIXES: dict[str, str] = {
    "+dsl": "dual softmax over the whole score matrix (transductive)",
    "+sinkhorn": "Sinkhorn normalisation of the whole score matrix (transductive)",
    "+qbnorm": "QB-Norm over a bank of training captions (uses extra data)",
}


def describe_protocol(
    name: str, *, method: str | None = None, selection: str | None = None, description: str | None = None
) -> ProtocolInfo:
    """The sentence and kind of a protocol name as written in ``result.json``.

    ``method`` lets ``base`` say what the method's own main procedure is (HCQ's codes, EERCF's coarse pass).
    ``description`` is the sentence the method recorded for this protocol (``protocols.<name>.description``,
    how a plugin method explains its own procedure); it wins over the sentences known here. An unknown name
    without one gets a sentence that says so rather than a guess.
    """
    core, oracle = split_selection(name, selection)
    suffix = next((s for s in _POST_SUFFIXES if core.endswith(s)), None)
    inner = core[: -len(suffix)] if suffix else core
    sentence = description.strip() if description and description.strip() else _core_sentence(inner, method)
    transductive = suffix in ("+dsl", "+sinkhorn") or inner in ("dsl", "sinkhorn")
    extra_data = suffix == "+qbnorm" or inner == "qbnorm"
    if sentence is None:
        sentence = (
            f"a protocol this leaderboard does not know (`{inner}`): read the recipe and the method's "
            "`protocols()` for the exact procedure; treated as not transductive."
        )
    if suffix:
        sentence = sentence.rstrip(".").replace("; not transductive", "") + f", followed by {_POST_SUFFIXES[suffix]}."
    if oracle:
        sentence = sentence.rstrip(".") + (
            "; the checkpoint is the epoch that scored best on this same test split (the reference "
            "repositories' selection): an oracle, optimistic by that choice."
        )
    return ProtocolInfo(name, sentence[0].upper() + sentence[1:], transductive, oracle, extra_data)


__all__ = ["ORACLE_SUFFIX", "ProtocolInfo", "describe_protocol", "split_selection"]
