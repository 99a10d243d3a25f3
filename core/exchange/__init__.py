"""Taking runs away and bringing them back: epoch CSV, weights files, share links."""
