//! Live training metrics for burn-train's renderers (terminal dashboard, plain text in CI):
//! every named scalar a training step reports (loss terms, PSNR, codebook usage and
//! perplexity, ...) and the images/s throughput.

use std::sync::Arc;
use std::time::Instant;

use burn::tensor::TensorReadError;
use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Adaptor, ItemLazy, Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};

/// Named scalars of one training or validation step, already on the host.
#[derive(Debug, Clone, Default)]
pub struct StepTerms {
    /// Images in the batch (the weight of this step's values in running means).
    pub batch_size: usize,
    /// `(name, value)` pairs, e.g. `("loss", 6.9)`, `("psnr", 18.2)`.
    pub terms: Vec<(&'static str, f64)>,
}

impl StepTerms {
    /// An empty set for a batch of `batch_size` images.
    pub fn new(batch_size: usize) -> Self {
        Self { batch_size, terms: Vec::new() }
    }

    /// Adds a term.
    pub fn with(mut self, name: &'static str, value: f64) -> Self {
        self.terms.push((name, value));
        self
    }

    /// Merges the terms of sub-batches (data parallelism): each value is the batch-size
    /// weighted mean; the batch size is the sum.
    pub fn merge(parts: Vec<StepTerms>) -> StepTerms {
        let total: usize = parts.iter().map(|p| p.batch_size).sum();
        let mut out = StepTerms::new(total);
        if let Some(first) = parts.first() {
            for (name, _) in &first.terms {
                let v = parts.iter().filter_map(|p| p.get(name).map(|v| v * p.batch_size as f64)).sum::<f64>()
                    / total.max(1) as f64;
                out.terms.push((name, v));
            }
        }
        out
    }

    /// The value of a term.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.terms.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

impl ItemLazy for StepTerms {
    fn sync(self) -> Result<Self, burn::tensor::ExecutionError> {
        Ok(self)
    }
}

impl Adaptor<StepTerms> for StepTerms {
    fn adapt(&self) -> StepTerms {
        self.clone()
    }
}

/// A numeric metric that follows one named term of [`StepTerms`].
///
/// Until a step of the current interval carries the term it has no value, so renderers leave it
/// out instead of showing NaN: the discriminator's terms before `loss.gan_start` and in
/// validation (which runs no discriminator).
#[derive(Clone)]
pub struct TermMetric {
    key: &'static str,
    name: MetricName,
    higher_is_better: bool,
    precision: usize,
    state: NumericMetricState,
    seen: bool,
}

impl TermMetric {
    /// Follows `key`, displayed as `label` (also a log file name: no `/`).
    pub fn new(key: &'static str, label: &str, higher_is_better: bool) -> Self {
        assert!(!label.contains('/'), "metric label `{label}` names a log file");
        Self {
            key,
            name: Arc::new(label.to_string()),
            higher_is_better,
            precision: 4,
            state: NumericMetricState::default(),
            seen: false,
        }
    }

    /// Digits after the decimal point.
    pub fn precision(mut self, precision: usize) -> Self {
        self.precision = precision;
        self
    }
}

impl Metric for TermMetric {
    type Input = StepTerms;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes { unit: None, higher_is_better: self.higher_is_better }.into()
    }

    fn update(&mut self, item: &StepTerms, _metadata: &MetricMetadata) -> Result<SerializedEntry, TensorReadError> {
        if let Some(v) = item.get(self.key) {
            self.state.update(v, item.batch_size.max(1));
            self.seen = true;
        }
        Ok(self.state.compute_update(FormatOptions::new(self.name()).precision(self.precision)))
    }

    fn compute(&mut self) -> Result<SerializedEntry, TensorReadError> {
        Ok(self.state.compute_final(FormatOptions::new(self.name()).precision(self.precision)))
    }

    fn clear(&mut self) {
        self.state.reset();
        self.seen = false;
    }
}

impl Numeric for TermMetric {
    fn value(&self) -> Option<NumericEntry> {
        self.seen.then(|| self.state.current_value())
    }
    fn running_value(&self) -> Option<NumericEntry> {
        self.seen.then(|| self.state.running_value())
    }
    fn final_value(&self) -> NumericEntry {
        self.state.final_value()
    }
}

/// Training throughput in images per second, measured between consecutive steps.
#[derive(Clone)]
pub struct ImagesPerSecond {
    name: MetricName,
    last: Option<Instant>,
    state: NumericMetricState,
}

impl Default for ImagesPerSecond {
    fn default() -> Self {
        Self { name: Arc::new("Images per second".into()), last: None, state: NumericMetricState::default() }
    }
}

impl Metric for ImagesPerSecond {
    type Input = StepTerms;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes { unit: Some("img/s".into()), higher_is_better: true }.into()
    }

    fn update(&mut self, item: &StepTerms, _metadata: &MetricMetadata) -> Result<SerializedEntry, TensorReadError> {
        let now = Instant::now();
        if let Some(last) = self.last.replace(now) {
            let secs = now.duration_since(last).as_secs_f64().max(1e-9);
            self.state.update(item.batch_size as f64 / secs, 1);
        }
        Ok(self.state.compute_update(FormatOptions::new(self.name()).precision(1)))
    }

    fn compute(&mut self) -> Result<SerializedEntry, TensorReadError> {
        Ok(self.state.compute_final(FormatOptions::new(self.name()).precision(1)))
    }

    fn clear(&mut self) {
        self.state.reset();
        self.last = None;
    }
}

impl Numeric for ImagesPerSecond {
    fn value(&self) -> Option<NumericEntry> {
        Some(self.state.current_value())
    }
    fn running_value(&self) -> Option<NumericEntry> {
        Some(self.state.running_value())
    }
    fn final_value(&self) -> NumericEntry {
        self.state.final_value()
    }
}

#[cfg(test)]
mod tests {
    use burn::data::dataloader::Progress;

    use super::*;

    fn metadata() -> MetricMetadata {
        MetricMetadata {
            progress: Progress { items_processed: 1, items_total: 1, unit: None },
            iteration: Some(1),
            lr: None,
        }
    }

    #[test]
    fn a_term_no_step_carried_has_no_value_until_one_does() {
        let mut gan = TermMetric::new("gan", "GAN", false);
        let before = StepTerms::new(4).with("loss", 1.0);
        gan.update(&before, &metadata()).unwrap();
        assert!(gan.value().is_none() && gan.running_value().is_none(), "no NaN for a term not yet reported");
        gan.update(&StepTerms::new(4).with("loss", 1.0).with("gan", 0.5), &metadata()).unwrap();
        gan.update(&StepTerms::new(4).with("gan", 1.5), &metadata()).unwrap();
        assert_eq!(gan.value().unwrap().current(), 1.5);
        assert_eq!(gan.running_value().unwrap().current(), 1.0, "mean over the steps that carried it");
        gan.clear();
        assert!(gan.value().is_none(), "a new interval starts empty");
    }
}
