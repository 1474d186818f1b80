"""After training: encode a collection into a store (parquet + safetensors), build the method's serving index
(FAISS where one fits), and search it by text (ranked lists, JSONL/TSV, a self-contained HTML page).

Scoring reuses each method's own test-time protocols, so a store of a test split searched with its captions
ranks exactly as that split's ``test`` score matrix does.
"""
