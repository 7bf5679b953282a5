"""Dataset tools beside the training pipeline: prune, pack and synth (read + encode + a streaming writer)."""
