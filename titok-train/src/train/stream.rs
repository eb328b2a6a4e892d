//! Deterministic, resumable, multi-worker batch loading for training.
//!
//! Burn's multi-worker `DataLoader` returns batches in completion order, which changes from run
//! to run; a resumed run could then never equal an uninterrupted one. Here the batch of every
//! global training step is a pure function of `(seed, step)`: epoch `e = step / steps_per_epoch`
//! visits the dataset in the permutation [`epoch_order`]`(seed, e)` (the last partial batch is
//! dropped), and each item's augmentation is drawn from `(seed, e, index)` by the batcher
//! ([`crate::data::ImageBatcher`]). Workers build batches ahead
//! in parallel and the loader hands them out in step order. [`StepLoader`] implements Burn's
//! [`DataLoader`] trait, so it plugs into burn-train.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::data::dataset::DatasetError;
use burn::tensor::Device;

use crate::data::epoch_order;

/// One dataset item of a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepItem {
    /// Index into the dataset.
    pub index: usize,
    /// Data epoch the item is drawn in (its augmentation depends on `(seed, epoch, index)`).
    pub epoch: u64,
}

/// Which items every global step reads.
#[derive(Debug)]
pub struct StepSchedule {
    /// Dataset length.
    pub len: usize,
    /// Items per step.
    pub batch_size: usize,
    /// Run seed.
    pub seed: u64,
    cache: Mutex<Option<(u64, Arc<Vec<usize>>)>>,
}

impl StepSchedule {
    /// A schedule over `len` items.
    ///
    /// # Panics
    /// When `batch_size` is 0 or larger than `len` (checked earlier with a clear error by the
    /// training configuration).
    pub fn new(len: usize, batch_size: usize, seed: u64) -> Self {
        assert!(batch_size > 0 && batch_size <= len, "batch size {batch_size} for {len} items");
        Self { len, batch_size, seed, cache: Mutex::new(None) }
    }

    /// Full batches per data epoch.
    pub fn steps_per_epoch(&self) -> u64 {
        (self.len / self.batch_size) as u64
    }

    fn permutation(&self, epoch: u64) -> Arc<Vec<usize>> {
        let mut cache = self.cache.lock().expect("schedule cache");
        if let Some((e, p)) = cache.as_ref()
            && *e == epoch
        {
            return p.clone();
        }
        let p = Arc::new(epoch_order(self.len, self.seed, epoch));
        *cache = Some((epoch, p.clone()));
        p
    }

    /// The items of global step `step` (0-based).
    pub fn items(&self, step: u64) -> Vec<StepItem> {
        let spe = self.steps_per_epoch();
        let (epoch, pos) = (step / spe, (step % spe) as usize);
        let perm = self.permutation(epoch);
        perm[pos * self.batch_size..(pos + 1) * self.batch_size]
            .iter()
            .map(|&index| StepItem { index, epoch })
            .collect()
    }
}

/// Builds the batch of a list of items on a device.
pub type MakeBatch<O> = Arc<dyn Fn(&[StepItem], &Device) -> Result<O, DatasetError> + Send + Sync>;

/// Loads the batches of global steps `start..end` in order with `workers` threads.
pub struct StepLoader<O> {
    schedule: Arc<StepSchedule>,
    make_batch: MakeBatch<O>,
    start: u64,
    end: u64,
    workers: usize,
    prefetch: usize,
    device: Device,
}

impl<O> Clone for StepLoader<O> {
    fn clone(&self) -> Self {
        Self {
            schedule: self.schedule.clone(),
            make_batch: self.make_batch.clone(),
            start: self.start,
            end: self.end,
            workers: self.workers,
            prefetch: self.prefetch,
            device: self.device.clone(),
        }
    }
}

impl<O: Send + 'static> StepLoader<O> {
    /// A loader of steps `start..end`.
    pub fn new(
        schedule: Arc<StepSchedule>,
        make_batch: MakeBatch<O>,
        steps: std::ops::Range<u64>,
        workers: usize,
        device: Device,
    ) -> Self {
        let workers = workers.max(1);
        Self { schedule, make_batch, start: steps.start, end: steps.end, workers, prefetch: 2 * workers, device }
    }

    /// The same loader building batches on another device (e.g. the autodiff one).
    pub fn on_device(&self, device: &Device) -> Self {
        Self { device: device.clone(), ..self.clone() }
    }

    /// The same schedule split for data parallelism: each step yields one sub-batch per device
    /// (the step's items dealt out in contiguous chunks, the first devices taking one more when
    /// the batch does not divide evenly).
    pub fn sharded(&self, devices: &[Device]) -> StepLoader<Vec<O>> {
        let make = self.make_batch.clone();
        let devices = devices.to_vec();
        let make_sharded: MakeBatch<Vec<O>> = Arc::new(move |items, _device| {
            let n = devices.len();
            let (base, extra) = (items.len() / n, items.len() % n);
            let mut start = 0;
            devices
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let len = base + usize::from(i < extra);
                    let chunk = &items[start..start + len];
                    start += len;
                    make(chunk, d)
                })
                .collect()
        });
        StepLoader {
            schedule: self.schedule.clone(),
            make_batch: make_sharded,
            start: self.start,
            end: self.end,
            workers: self.workers,
            prefetch: self.prefetch,
            device: self.device.clone(),
        }
    }

    /// This rank's share of every step for multi-process data parallelism: of each global
    /// step's items, the `rank`-th of `world_size` contiguous equal chunks (the batch size must
    /// divide evenly; [`crate::stages::runner::launch`] checks it). The global batch, and so
    /// the data order, does not depend on the number of ranks.
    ///
    /// # Panics
    /// When `rank >= world_size`.
    pub fn for_rank(&self, rank: usize, world_size: usize) -> Self {
        assert!(rank < world_size, "rank {rank} of {world_size}");
        if world_size == 1 {
            return self.clone();
        }
        let make = self.make_batch.clone();
        let make_rank: MakeBatch<O> = Arc::new(move |items, device| {
            let share = items.len() / world_size;
            make(&items[rank * share..(rank + 1) * share], device)
        });
        Self { make_batch: make_rank, ..self.clone() }
    }

    /// The same loader over other steps.
    pub fn with_steps(&self, steps: std::ops::Range<u64>) -> Self {
        Self { start: steps.start, end: steps.end, ..self.clone() }
    }

    /// The schedule.
    pub fn schedule(&self) -> &StepSchedule {
        &self.schedule
    }
}

/// In-order iterator over a [`StepLoader`]'s steps.
pub struct StepIter<O> {
    receiver: Receiver<(u64, Result<O, DatasetError>)>,
    pending: BTreeMap<u64, Result<O, DatasetError>>,
    next: u64,
    start: u64,
    end: u64,
    batch_size: usize,
    _threads: Vec<std::thread::JoinHandle<()>>,
}

impl<O> Iterator for StepIter<O> {
    type Item = Result<O, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        loop {
            if let Some(batch) = self.pending.remove(&self.next) {
                self.next += 1;
                return Some(batch);
            }
            match self.receiver.recv() {
                Ok((step, batch)) => {
                    self.pending.insert(step, batch);
                }
                Err(_) => {
                    let step = self.next;
                    self.next = self.end;
                    return Some(Err(DatasetError::new(std::io::Error::other(format!(
                        "data worker stopped before producing step {step}"
                    )))));
                }
            }
        }
    }
}

impl<O> DataLoaderIterator<O> for StepIter<O> {
    fn progress(&self) -> Progress {
        Progress {
            items_processed: (self.next - self.start) as usize * self.batch_size,
            items_total: (self.end - self.start) as usize * self.batch_size,
            unit: Some("images".into()),
        }
    }
}

impl<O: Send + 'static> StepLoader<O> {
    /// Starts the workers and returns the in-order iterator.
    pub fn stream(&self) -> StepIter<O> {
        let (tx, rx) = sync_channel(self.prefetch);
        let threads = (0..self.workers as u64)
            .map(|w| {
                let tx = tx.clone();
                let (schedule, make, device) = (self.schedule.clone(), self.make_batch.clone(), self.device.clone());
                let (start, end, stride) = (self.start + w, self.end, self.workers as u64);
                std::thread::spawn(move || {
                    let mut step = start;
                    while step < end {
                        let items = schedule.items(step);
                        let batch = make(&items, &device);
                        if tx.send((step, batch)).is_err() {
                            return; // the iterator was dropped
                        }
                        step += stride;
                    }
                })
            })
            .collect();
        StepIter {
            receiver: rx,
            pending: BTreeMap::new(),
            next: self.start,
            start: self.start,
            end: self.end,
            batch_size: self.schedule.batch_size,
            _threads: threads,
        }
    }
}

impl<O: Send + Sync + std::fmt::Debug + 'static> DataLoader<O> for StepLoader<O> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<O> + 'a> {
        Box::new(self.stream())
    }

    fn num_items(&self) -> usize {
        (self.end - self.start) as usize * self.schedule.batch_size
    }

    fn to_device(&self, device: &Device) -> Arc<dyn DataLoader<O>> {
        Arc::new(self.on_device(device))
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<O>> {
        let b = self.schedule.batch_size;
        let (s, e) = (self.start + (start / b) as u64, self.start + end.div_ceil(b) as u64);
        Arc::new(self.with_steps(s..e.min(self.end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_cover_each_epoch_once_in_a_seeded_order() {
        let s = StepSchedule::new(10, 3, 7);
        assert_eq!(s.steps_per_epoch(), 3);
        let mut seen: Vec<usize> = (0..3).flat_map(|t| s.items(t)).map(|i| i.index).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 9, "9 distinct items per epoch (one dropped)");
        let e1: Vec<usize> = (3..6).flat_map(|t| s.items(t)).map(|i| i.index).collect();
        let e0: Vec<usize> = (0..3).flat_map(|t| s.items(t)).map(|i| i.index).collect();
        assert_ne!(e0, e1, "a new permutation per epoch");
        assert_eq!(StepSchedule::new(10, 3, 7).items(4), s.items(4), "pure function of (seed, step)");
        assert_ne!(StepSchedule::new(10, 3, 8).items(0), s.items(0));
    }

    #[test]
    fn workers_deliver_batches_in_step_order() {
        let schedule = Arc::new(StepSchedule::new(100, 4, 1));
        let make: MakeBatch<Vec<usize>> = Arc::new(|items: &[StepItem], _d: &Device| {
            // Uneven work so that workers finish out of order.
            std::thread::sleep(std::time::Duration::from_millis((items[0].index % 7) as u64));
            Ok(items.iter().map(|i| i.index).collect())
        });
        let loader = StepLoader::new(schedule.clone(), make, 5..30, 3, Device::flex());
        let got: Vec<Vec<usize>> = loader.stream().map(|b| b.unwrap()).collect();
        let want: Vec<Vec<usize>> = (5..30).map(|t| schedule.items(t).iter().map(|i| i.index).collect()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn ranks_read_disjoint_shares_that_make_the_global_batch() {
        let schedule = Arc::new(StepSchedule::new(50, 6, 3));
        let make: MakeBatch<Vec<usize>> =
            Arc::new(|items: &[StepItem], _d: &Device| Ok(items.iter().map(|i| i.index).collect()));
        let loader = StepLoader::new(schedule.clone(), make, 0..9, 2, Device::flex());
        let shares: Vec<Vec<Vec<usize>>> =
            (0..3).map(|r| loader.for_rank(r, 3).stream().map(|b| b.unwrap()).collect()).collect();
        for step in 0..9 {
            let joined: Vec<usize> = (0..3).flat_map(|r| shares[r][step].clone()).collect();
            let want: Vec<usize> = schedule.items(step as u64).iter().map(|i| i.index).collect();
            assert_eq!(joined, want, "step {step}: the ranks' shares in rank order are the global batch");
            assert!(shares.iter().all(|s| s[step].len() == 2));
        }
    }

    #[test]
    fn a_rank_splits_its_own_share_over_its_devices() {
        // 2 ranks x 2 devices, 8 images per step: rank r trains on images 4r..4r+4 of the step,
        // 2 on each of its devices; nothing is dropped or read twice.
        let schedule = Arc::new(StepSchedule::new(40, 8, 5));
        let make: MakeBatch<Vec<usize>> =
            Arc::new(|items: &[StepItem], _d: &Device| Ok(items.iter().map(|i| i.index).collect()));
        let loader = StepLoader::new(schedule.clone(), make, 0..4, 1, Device::flex());
        let devices = [Device::flex(), Device::flex()];
        for step in 0..4u64 {
            let want: Vec<usize> = schedule.items(step).iter().map(|i| i.index).collect();
            for rank in 0..2 {
                let got = loader.sharded(&devices).for_rank(rank, 2).with_steps(step..step + 1).stream();
                let shards: Vec<Vec<usize>> = got.map(|b| b.unwrap()).next().unwrap();
                assert_eq!(
                    shards,
                    vec![want[4 * rank..4 * rank + 2].to_vec(), want[4 * rank + 2..4 * rank + 4].to_vec()]
                );
            }
        }
    }
}
