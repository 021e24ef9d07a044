"""Gene-level genetics: subject x gene embeddings and leave-one-gene-out attribution."""
