"""vidbench: reproducible text-to-video retrieval."""
