"""Encode: raw batches -> float32 CSR or dense blocks in layout order (k-mer folding, hashing, categories, packed rows)."""
