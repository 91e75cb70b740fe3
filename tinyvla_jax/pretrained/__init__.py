"""Weights from elsewhere: Hugging Face checkpoints (CLIP/SigLIP vision, GPT-NeoX/Pythia) -> our params."""
