"""Evaluation: the CervAI challenge metric and the `pipeline.py evaluate` report."""
