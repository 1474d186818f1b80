"""The MMT-feature data code and the HCQ-MMT model code stay Lightning-free and independent of each other.

Two fresh interpreters import the modules (about 3 s of CPU each, mostly torch), so sys.modules is clean.
"""

from __future__ import annotations

import json
import subprocess
import sys


def _loaded_after_import(module: str) -> list[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_data_and_models_do_not_import_each_other_or_lightning() -> None:
    for module, forbidden in (
        ("vidbench.data.mmt, vidbench.data.bert_text", "vidbench.models"),
        ("vidbench.models.mmt, vidbench.models.bert_text, vidbench.models.gating", "vidbench.data"),
        ("vidbench.models.hcq_head", "vidbench.eval"),  # models know nothing of evaluation (issue 18)
    ):
        loaded = _loaded_after_import(module)
        assert not [m for m in loaded if m == forbidden or m.startswith(forbidden + ".")], module
        assert "lightning" not in loaded and "pytorch_lightning" not in loaded, module
