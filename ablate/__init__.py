"""ablate: data ablations by modular training and parameter averaging (Na et al., EMNLP 2024)."""

__version__ = "0.1.0"
