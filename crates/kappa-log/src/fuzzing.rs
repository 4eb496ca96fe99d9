//! Entry points shared by the cargo-fuzz targets in `fuzz/` and the corpus replay
//! tests. Not part of the public API.
