"""Real-Fake: Stable Diffusion + LoRA finetuned with distribution matching, latent-prior synthesis, privacy."""
