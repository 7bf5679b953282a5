"""Scoring: trained models applied to data, batch by batch (predictions, streaming metrics)."""
