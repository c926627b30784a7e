"""Stage 3: measured C2-C7 curve geometry and LightGBM assessment of curvature and alignment."""
