//! A plain-text burn-train renderer for logs and CI: one line every `every` steps with the
//! running values of every metric, and one line per validation. (In a terminal burn-train's own
//! dashboard is used instead.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::IsTerminal;
use std::time::Instant;

use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation, MetricsRendererTraining,
};

/// Prints compact metric lines to stderr.
pub struct LogRenderer {
    every: usize,
    batch_size: usize,
    first_step: u64,
    names: HashMap<MetricId, String>,
    train: BTreeMap<String, f64>,
    valid: BTreeMap<String, f64>,
    /// Metrics some step of the current split reported a value for.
    reported: HashSet<MetricId>,
    split: String,
    items_in_split: usize,
    interval: usize,
    started: Instant,
    quiet: bool,
}

impl LogRenderer {
    /// Logs every `every` steps of `batch_size` images; `first_step` is the step the run
    /// (re)starts from.
    pub fn new(every: usize, batch_size: usize, first_step: u64) -> Self {
        Self {
            every: every.max(1),
            batch_size: batch_size.max(1),
            first_step,
            names: HashMap::new(),
            train: BTreeMap::new(),
            valid: BTreeMap::new(),
            reported: HashSet::new(),
            split: String::new(),
            items_in_split: 0,
            interval: 0,
            started: Instant::now(),
            quiet: false,
        }
    }

    /// A renderer that prints nothing: the ranks other than 0 of a multi-process job, whose
    /// lines would repeat rank 0's.
    pub fn silent() -> Self {
        Self { quiet: true, ..Self::new(1, 1, 0) }
    }

    /// Keeps the latest value of a numeric metric. The final value of a metric that no step of
    /// the split reported (a term no step carried, see [`super::metrics::TermMetric`]; its
    /// mean over no steps is NaN) is left out; every other value, NaN included, is kept.
    fn record(&mut self, state: MetricState, valid: bool) {
        let MetricState::Numeric(entry, Some(value)) = state else { return };
        match value {
            NumericEntry::Final(_) if !self.reported.contains(&entry.metric_id) => return,
            NumericEntry::Final(_) => {}
            _ => {
                self.reported.insert(entry.metric_id.clone());
            }
        }
        if let Some(name) = self.names.get(&entry.metric_id) {
            let target = if valid { &mut self.valid } else { &mut self.train };
            target.insert(name.clone(), value.current());
        }
    }

    fn line(values: &BTreeMap<String, f64>) -> String {
        values.iter().map(|(k, v)| format!("{k} {}", fmt(*v))).collect::<Vec<_>>().join(" | ")
    }
}

fn fmt(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) { format!("{v:.3e}") } else { format!("{v:.4}") }
}

/// burn-train's dashboard in a terminal, [`LogRenderer`] otherwise; under a launcher
/// (`launched`: this process's rank; `mpirun` may hand its ranks a pseudo-terminal, but
/// forwards their output line by line) rank 0's lines, and [`LogRenderer::silent`] on the
/// other ranks.
pub fn renderer_for(
    every: usize,
    batch_size: usize,
    first_step: u64,
    launched: Option<usize>,
) -> Option<Box<dyn MetricsRenderer>> {
    if launched.is_some_and(|rank| rank > 0) {
        Some(Box::new(LogRenderer::silent()))
    } else if launched.is_none() && std::io::stdout().is_terminal() {
        None
    } else {
        Some(Box::new(LogRenderer::new(every, batch_size, first_step)))
    }
}

impl MetricsRendererTraining for LogRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.record(state, false);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(state, true);
    }
}

impl MetricsRendererEvaluation for LogRenderer {
    fn update_test(&mut self, _name: EvaluationName, state: MetricState) {
        self.record(state, true);
    }
}

impl TrainingProgressLogger for LogRenderer {
    fn start(&mut self, total_epochs: usize, _starting_epoch: usize, _total_items: Option<usize>, label: Option<&str>) {
        if !self.quiet {
            eprintln!("{}: {total_epochs} validation intervals", label.unwrap_or("training"));
        }
    }

    fn update_epoch(&mut self, epoch: usize) {
        self.interval = epoch;
    }

    fn start_split(&mut self, split: &str, _total_items: usize) {
        self.split = split.to_string();
        self.items_in_split = 0;
        self.reported.clear();
        // Each line shows the values of its own split only.
        if split == "valid" { self.valid.clear() } else { self.train.clear() }
    }

    fn update_split(&mut self, items_processed: usize) {
        self.items_in_split = items_processed;
        if self.split == "train" {
            let steps = items_processed / self.batch_size;
            if steps > 0 && steps.is_multiple_of(self.every) && !self.quiet {
                let step = self.first_step + steps as u64;
                eprintln!("[{:>7.1}s] step {step} | {}", self.started.elapsed().as_secs_f64(), Self::line(&self.train));
            }
        }
    }

    fn end_split(&mut self) {
        if self.quiet {
            return;
        }
        if self.split == "valid" {
            eprintln!("[{:>7.1}s] validation | {}", self.started.elapsed().as_secs_f64(), Self::line(&self.valid));
        } else {
            self.first_step += (self.items_in_split / self.batch_size) as u64;
        }
    }

    fn end(&mut self) {
        if self.quiet {
            return;
        }
        eprintln!("[{:>7.1}s] training ended", self.started.elapsed().as_secs_f64());
    }

    fn log_event_training(&mut self, event: String) {
        // burn-train reports every iteration as an event; the step lines say enough.
        if !self.quiet && event != "Iteration" && !event.starts_with("Iteration ") {
            eprintln!("{event}");
        }
    }
}

impl EvaluationProgressLogger for LogRenderer {
    fn start_global_progress(&mut self, _total_tests: usize) {}
    fn start_test(&mut self, name: &str, _total_items: usize) {
        self.split = name.to_string();
    }
    fn update_test_progress(&mut self, _items_processed: usize) {}
    fn end_test(&mut self) {
        if self.quiet {
            return;
        }
        eprintln!("{} | {}", self.split, Self::line(&self.valid));
    }
    fn end_global_progress(&mut self) {}
    fn log_event_evaluation(&mut self, event: String) {
        if !self.quiet {
            eprintln!("{event}");
        }
    }
}

impl MetricsRenderer for LogRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id.clone(), definition.name.to_string());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use burn::train::metric::{MetricEntry, SerializedEntry};

    use super::*;
    use crate::train::metrics::TermMetric;

    fn numeric(id: &MetricId, value: NumericEntry) -> MetricState {
        MetricState::Numeric(
            MetricEntry::new(id.clone(), SerializedEntry::new(String::new(), String::new())),
            Some(value),
        )
    }

    #[test]
    fn final_values_of_unreported_terms_are_left_out_and_reported_nans_show() {
        let mut r = LogRenderer::silent();
        let id = |n: &str| MetricId::new(Arc::new(n.into()));
        let (gan, loss) = (id("gan"), id("loss"));
        r.register_metric(MetricDefinition::new(gan.clone(), &TermMetric::new("gan", "GAN", false)));
        r.register_metric(MetricDefinition::new(loss.clone(), &TermMetric::new("loss", "Loss", false)));
        r.start_split("valid", 3);
        // One NaN batch among finite ones: the interval mean is NaN and shows.
        for v in [1.0, f64::NAN, 2.0] {
            r.update_valid(numeric(&loss, NumericEntry::Value(v)));
        }
        r.update_valid(numeric(&loss, NumericEntry::Final(f64::NAN)));
        // No step carried the GAN term: its final NaN is left out.
        r.update_valid(numeric(&gan, NumericEntry::Final(f64::NAN)));
        assert_eq!(LogRenderer::line(&r.valid), "Loss NaN");
        // A new split starts empty and forgets what the last one reported.
        r.start_split("valid", 1);
        r.update_valid(numeric(&loss, NumericEntry::Final(0.5)));
        assert_eq!(LogRenderer::line(&r.valid), "", "an unreported final value is not taken");
        r.update_valid(numeric(&gan, NumericEntry::Value(0.25)));
        r.update_valid(numeric(&gan, NumericEntry::Final(0.3)));
        assert_eq!(LogRenderer::line(&r.valid), "GAN 0.3000");
    }
}
