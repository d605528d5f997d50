"""Point prompts -> regions: SAM-family prompt decoding on slice embeddings, propagated in 3D."""
