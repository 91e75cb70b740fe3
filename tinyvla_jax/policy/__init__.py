"""The diffusion policy: the denoising model with its noise schedule, training loss and sampler, in one
object that training, validation, evaluation and a server share (diffusion_policy.py)."""
