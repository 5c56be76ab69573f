"""Diffusion models: EDM preconditioning, loss and samplers."""
