"""Metrics: classification (real val/test) and generative (FID/KID, diversity, memorisation)."""
