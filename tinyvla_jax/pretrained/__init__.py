"""Weights from and to Hugging Face folders (CLIP/SigLIP vision, GPT-NeoX/Pythia).

  hf_import.py   config.json dicts and numpy state dicts -> our configs and params (pure numpy)
  hf_folder.py   a folder on disk (config.json + safetensors, sharded or not) -> configs and params
  backbones.py   `config.pretrained.{llm,vision}` in a run: model sizes at train start, weights after init
  hf_export.py   our params -> folders transformers reads (and `python -m tinyvla_jax.pretrained.hf_export`)
"""
