//! A burn-train learning strategy counted in optimisation steps: deterministic resumable data
//! ([`super::stream`]), validation every `valid_every` steps, and checkpoints every
//! `checkpoint_every` steps committed with [`super::run`]'s protocol.
//!
//! It plugs into `SupervisedTraining::with_training_strategy(TrainingStrategy::Custom(..))`, so
//! the metrics, renderers (terminal dashboard or plain text) and checkpointers are burn-train's.
//! burn-train "epochs" are the validation intervals of this strategy.

use std::sync::Arc;

use burn::data::dataloader::Progress;
use burn::tensor::Device;
use burn::train::checkpoint::CheckpointerError;
use burn::train::{
    EventProcessorTraining, InferenceStep, Learner, LearnerEvent, LearnerModel, SupervisedLearningStrategy,
    SupervisedTrainingEventProcessor, TrainLoader, TrainStep, TrainingComponents, TrainingError, TrainingItem,
    ValidLoader,
};

use burn::optim::GradientsAccumulator;

use super::metrics::StepTerms;
use super::optim::scale_grads;
use super::run::{RunDir, RunState, SaveTracker};
use super::stream::StepLoader;
use crate::distributed::ProcessGroup;
use crate::distributed::sync::{all_reduce_gradients, all_reduce_terms, check_replicas};
use crate::train::TrainError;

/// Work done at a checkpoint besides the burn-train records: e.g. exporting the EMA weights as
/// an official HF folder, writing a PNG grid.
pub type StepHook<M> = Arc<dyn Fn(&M, u64) -> Result<(), TrainError> + Send + Sync>;

/// Step-based single-device strategy.
pub struct StepStrategy<M: LearnerModel> {
    /// Training device (autodiff is enabled on it here).
    pub device: Device,
    /// The training batches of every global step.
    pub loader: StepLoader<<M as TrainStep>::Input>,
    /// Last step (exclusive).
    pub total_steps: u64,
    /// Steps between validations (= one burn-train "epoch").
    pub valid_every: u64,
    /// Steps between checkpoints.
    pub checkpoint_every: u64,
    /// The run directory.
    pub run: RunDir,
    /// Completion of the asynchronous record saves.
    pub tracker: SaveTracker,
    /// Written into `latest.json` (the step is filled in).
    pub state: RunState,
    /// Runs at every checkpoint, before the commit.
    pub on_checkpoint: StepHook<M>,
    /// Runs after every validation.
    pub on_validation: StepHook<M>,
    /// More devices for data parallelism (each step's batch is split across the main device and
    /// these; gradients are averaged on the main device, which runs the optimizer).
    pub extra_devices: Vec<Device>,
    /// The processes of a multi-process job (one for a plain run): this rank trains on its
    /// share of each step, the gradients are averaged over the ranks, and only rank 0 writes
    /// checkpoints and runs validation.
    pub group: &'static ProcessGroup,
}

/// Forward and backward of one step: on the learner's device for one shard, else one thread
/// per device on a copy of the model (`fork`), gradients moved to the main device and averaged
/// (each shard's loss is a mean over its images, so the average over equal shards is the
/// gradient of the whole batch's mean loss).
fn data_parallel_step<M>(
    learner: &Learner<M>,
    shards: Vec<<M as TrainStep>::Input>,
    devices: &[Device],
) -> burn::train::TrainOutput<StepTerms>
where
    M: LearnerModel + TrainStep<Output = StepTerms>,
{
    if shards.len() == 1 {
        let batch = shards.into_iter().next().expect("one shard");
        return learner.train_step(batch);
    }
    let model = learner.model();
    let outputs: Vec<burn::train::TrainOutput<StepTerms>> = std::thread::scope(|scope| {
        let handles: Vec<_> = shards
            .into_iter()
            .zip(devices)
            .map(|(batch, device)| {
                let replica = model.clone();
                scope.spawn(move || TrainStep::step(&replica.fork(device), batch))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("training worker panicked")).collect()
    });
    let main = devices[0].clone();
    let n = outputs.len();
    let mut accumulator = GradientsAccumulator::<M>::new();
    let mut terms = Vec::with_capacity(n);
    for out in outputs {
        accumulator.accumulate(&model, out.grads.to_device(&main, &model));
        terms.push(out.item);
    }
    let mut grads = accumulator.grads();
    scale_grads(&model, &mut grads, 1.0 / n as f64);
    burn::train::TrainOutput { grads, item: StepTerms::merge(terms) }
}

impl<M> SupervisedLearningStrategy<M> for StepStrategy<M>
where
    M: LearnerModel + TrainStep<Output = StepTerms>,
    <M as TrainStep>::Input: Send + Sync + std::fmt::Debug,
{
    fn fit(
        &self,
        components: TrainingComponents<M>,
        mut learner: Learner<M>,
        _dataloader_train: TrainLoader<M>,
        dataloader_valid: ValidLoader<M>,
        _starting_epoch: usize,
    ) -> (M, SupervisedTrainingEventProcessor<M>) {
        let device = self.device.clone().autodiff();
        learner.fork(&device);
        // Training batches live on the autodiff devices (one shard per device), validation
        // batches on the plain main device.
        let shard_devices: Vec<Device> = std::iter::once(self.device.clone())
            .chain(self.extra_devices.iter().cloned())
            .map(Device::autodiff)
            .collect();
        // This rank's contiguous share of every global batch, split again over its devices.
        let train = self.loader.sharded(&shard_devices).for_rank(self.group.rank, self.group.world_size);
        let valid = dataloader_valid.to_device(&self.device);
        let mut processor = components.event_processor;
        let mut checkpointer = components.checkpointer;
        let interrupter = components.interrupter;
        let store = components.event_store;
        // burn-train's `checkpoint` is the number of completed steps here.
        let mut step = components.checkpoint.unwrap_or(0) as u64;

        // One stream (and one set of worker threads) for the whole run.
        let mut stream = train.with_steps(step..self.total_steps).stream();
        while step < self.total_steps && !interrupter.should_stop() {
            let interval = step / self.valid_every + 1;
            let end = (interval * self.valid_every).min(self.total_steps);
            let total_items = ((end - step) as usize) * self.loader.schedule().batch_size;
            interrupter.fail_on_error(
                processor.process_train(LearnerEvent::StartSplit { epoch_number: interval as usize, total_items }),
            );
            let mut done_items = 0;
            while step < end {
                let Some(batch) = stream.next() else { break };
                let shards = match batch {
                    Ok(b) => b,
                    Err(e) => {
                        interrupter.fail(e);
                        break;
                    }
                };
                let mut out = data_parallel_step(&learner, shards, &shard_devices);
                if self.group.is_distributed() {
                    let synced = all_reduce_gradients(&learner.model(), &mut out.grads, self.group)
                        .and_then(|()| all_reduce_terms(out.item, self.group));
                    match synced {
                        Ok(terms) => out.item = terms,
                        Err(e) => {
                            interrupter.fail(training_error(e));
                            break;
                        }
                    }
                }
                learner.lr_step();
                learner.optimizer_step(out.grads);
                step += 1;
                done_items += self.loader.schedule().batch_size;
                let progress =
                    Progress { items_processed: done_items, items_total: total_items, unit: Some("images".into()) };
                let item = TrainingItem::new(out.item, progress, Some(step as usize), Some(learner.lr_current()));
                interrupter.fail_on_error(processor.process_train(LearnerEvent::ProcessedItem(item)));

                if step.is_multiple_of(self.checkpoint_every) || step == self.total_steps {
                    interrupter.fail_on_error(processor.flush());
                    if let Err(e) = self.checkpoint(&learner, &mut checkpointer, &store, step) {
                        interrupter.fail(training_error(e));
                    }
                }
                if interrupter.should_stop() {
                    break;
                }
            }
            interrupter.fail_on_error(processor.process_train(LearnerEvent::EndSplit(interval as usize)));
            if interrupter.should_stop() {
                break;
            }

            if !self.group.is_main() {
                // Rank 0 validates; the others go on and wait for it at the next all-reduce.
                interrupter.fail_on_error(processor.process_train(LearnerEvent::EndEpoch(interval as usize)));
                continue;
            }
            // Validation on the EMA-free training model (the hook may use the EMA weights).
            let model = learner.model().valid();
            interrupter.fail_on_error(processor.process_valid(LearnerEvent::StartSplit {
                epoch_number: interval as usize,
                total_items: valid.num_items(),
            }));
            let mut iter = valid.iter();
            let mut iteration = 0;
            while let Some(item) = iter.next() {
                let item = match item {
                    Ok(i) => i,
                    Err(e) => {
                        interrupter.fail(e);
                        break;
                    }
                };
                iteration += 1;
                let progress = iter.progress();
                let out = InferenceStep::step(&model, item);
                let item = TrainingItem::new(out, progress, Some(iteration), None);
                interrupter.fail_on_error(processor.process_valid(LearnerEvent::ProcessedItem(item)));
            }
            interrupter.fail_on_error(processor.process_valid(LearnerEvent::EndSplit(interval as usize)));
            interrupter.fail_on_error(processor.process_train(LearnerEvent::EndEpoch(interval as usize)));
            if let Err(e) = (self.on_validation)(&learner.model(), step) {
                interrupter.fail(training_error(e));
            }
        }
        (learner.model(), processor)
    }
}

/// Our errors travel through burn-train's interrupter as checkpoint errors.
fn training_error(e: TrainError) -> TrainingError {
    TrainingError::Checkpoint(CheckpointerError::Unknown(e.to_string()))
}

impl<M: LearnerModel> StepStrategy<M> {
    fn checkpoint(
        &self,
        learner: &Learner<M>,
        checkpointer: &mut Option<burn::train::LearningCheckpointer<M>>,
        store: &burn::train::metric::store::EventStoreClient,
        step: u64,
    ) -> Result<(), TrainError> {
        if self.group.is_distributed() {
            let fingerprint = check_replicas(&learner.model(), self.group, step)?;
            tracing::info!("{}: parameters after step {step}: fingerprint {fingerprint:016x}", self.group.label());
            if !self.group.is_main() {
                return Ok(());
            }
        }
        let checkpointer =
            checkpointer.as_mut().ok_or_else(|| TrainError::Config("the step strategy needs checkpointers".into()))?;
        checkpointer.checkpoint(learner, step as usize, store);
        (self.on_checkpoint)(&learner.model(), step)?;
        self.tracker.wait(step as usize);
        let state = RunState { step, weights: format!("checkpoints/step-{step:07}"), ..self.state.clone() };
        self.run.commit(&state)
    }
}
