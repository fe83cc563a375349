//! Everything the library keeps on disk: datasets of demonstrations and atomic file writes.
