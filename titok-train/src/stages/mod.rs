//! The training modes of `titok-train`, each a burn-train model (`TrainStep` +
//! `InferenceStep`) plus a function that runs it.

pub mod generator;
pub mod runner;
pub mod stage2;
pub mod tokenizer;
pub mod vqgan;
