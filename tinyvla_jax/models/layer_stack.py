"""A stack of identical transformer layers run one after the other: unrolled (a Python loop, so XLA
compiles every layer) or as one `lax.scan` over their stacked weights (`model.scan_layers`: XLA compiles
one layer, which is what the deep presets' first compile is made of).

The parameter tree is the same either way: `layers_0 .. layers_{n-1}` under the calling module, the names
that the Hugging Face import and export, LoRA, the optimizer's partition and the sharding rules know. The
scan stacks those per-layer weights on each call (one copy of the layers' weights and, in the backward
pass, of their gradients) instead of storing them stacked: a stored [n, ...] layout would change every
consumer of the tree for what is a compile-time saving.

With a "dropout" rng (LoRA dropout in training) the scanned layers draw their masks from
fold_in(rng, layer index), not from Flax's per-module streams: the same distribution, other masks than
the unrolled stack's. Without one, both give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def run_layers(owner: nn.Module, layers: Sequence[nn.Module], x: jax.Array, *args, scan: bool) -> jax.Array:
  """x through `layers` (submodules of `owner`, all of one class and config) in order; `args` go to every
  layer unchanged (e.g. the attention mask). Initialization always unrolls: it creates each layer's weights
  under its own name."""
  if not scan or len(layers) < 2 or owner.is_initializing():
    for layer in layers:
      x = layer(x, *args)
    return x
  params = owner.variables["params"]
  names = [layer.name for layer in layers]
  missing = [n for n in names if n not in params]
  if missing:
    raise ValueError(f"{type(owner).__name__}: no parameters for {missing}: the params do not match the model")
  stacked = jax.tree.map(lambda *per_layer: jnp.stack(per_layer), *(params[n] for n in names))
  # The layer as a stand-alone module: applied to one layer's slice of the stack at a time. A remat-wrapped
  # class stays remat-wrapped, so model.remat holds inside the scan too.
  template = layers[0].clone(parent=None, name=None)
  rng = owner.make_rng("dropout") if owner.has_rng("dropout") else None

  def body(h, inputs):
    layer_params, index = inputs
    rngs = {} if rng is None else {"dropout": jax.random.fold_in(rng, index)}
    return template.apply({"params": layer_params}, h, *args, rngs=rngs), None

  x, _ = jax.lax.scan(body, x, (stacked, jnp.arange(len(layers))))
  return x
