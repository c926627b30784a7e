"""The phantom: challenge-layout T2 patients rendered from real or sampled geometry, labels drawn visibly."""
