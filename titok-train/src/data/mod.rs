//! Datasets (image folders and tar archives), transforms and batching.
