"""tinyvla_jax: TinyVLA (ViT + GPT-NeoX + Diffusion Policy's U-Net) in JAX/Flax.

    import tinyvla_jax
    policy = tinyvla_jax.load_policy("workdirs/fixed")    # a trained checkpoint, ready to act
    policy.infer(observation)["actions"]                   # see tinyvla_jax/serving/inference.py
"""


def __getattr__(name):
  # Imported on first use, so `import tinyvla_jax` stays free of JAX and Flax.
  if name == "load_policy":
    from tinyvla_jax.serving.inference import load_policy
    return load_policy
  raise AttributeError(f"module 'tinyvla_jax' has no attribute {name!r}")
