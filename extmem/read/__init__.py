"""Read: shards and footers -> union schema -> feature layout -> memory plan -> raw batches (arrow columns, labels, weights)."""
