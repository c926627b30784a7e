"""Released weights: the manifest (sha256 and size per file) that `run` checks before loading anything."""
