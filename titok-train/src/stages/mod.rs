//! The training modes of `titok-train`, each a burn-train model (`TrainStep` +
//! `InferenceStep`) plus a function that runs it.

pub mod runner;
pub mod tokenizer;
pub mod vqgan;
