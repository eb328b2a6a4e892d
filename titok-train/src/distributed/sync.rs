//! What the ranks exchange each step: the gradients (one flat host buffer per step), the
//! logged loss terms, and at checkpoints a fingerprint of the parameters.

use std::hash::Hasher;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};

use super::ProcessGroup;
use crate::train::TrainError;
use crate::train::metrics::StepTerms;

/// Collects the gradients of a module's float parameters, flattened, in visiting order.
struct Gather<'a> {
    grads: &'a GradientsParams,
    flat: Vec<Tensor<1>>,
    ids: Vec<ParamId>,
}

impl ModuleVisitor for Gather<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.flat.push(g.reshape([-1]));
            self.ids.push(param.id);
        }
    }
}

/// Puts the averaged gradients back, in the same order, with their shapes.
struct Scatter<'a> {
    grads: &'a mut GradientsParams,
    flat: Tensor<1>,
    offset: usize,
}

impl ModuleVisitor for Scatter<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            let dims = g.dims();
            let n: usize = dims.iter().product();
            let averaged = self.flat.clone().slice(self.offset..self.offset + n).reshape(dims);
            self.offset += n;
            self.grads.register(param.id, averaged);
        }
    }
}

/// Replaces every gradient of `module`'s parameters in `grads` by its mean over the ranks of
/// `group` (PyTorch DDP's all-reduce): the gradients are concatenated into one buffer
/// `[total elements]` and averaged over the ranks: on the GPUs with NCCL when the `nccl`
/// feature set it up ([`ProcessGroup::use_device`]), otherwise copied to the host as f32,
/// summed with MPI, divided by the world size and copied back to the gradients' device. Buffers registered under parameter ids (the LeCam EMA of the GAN
/// loss) are averaged with them. No-op for one process.
///
/// # Errors
/// [`TrainError::Distributed`] when the ranks hold gradients of different sizes (different
/// models or configurations): averaging them would mix unrelated numbers.
pub fn all_reduce_gradients<M: Module>(
    module: &M,
    grads: &mut GradientsParams,
    group: &ProcessGroup,
) -> Result<(), TrainError> {
    if !group.is_distributed() {
        return Ok(());
    }
    let mut gather = Gather { grads, flat: Vec::new(), ids: Vec::new() };
    module.visit(&mut gather);
    let total: usize = gather.flat.iter().map(|t| t.dims()[0]).sum();
    let (min, max) = group.min_max(total as i64);
    if min != max {
        return Err(TrainError::Distributed(format!(
            "the ranks hold gradients of {min} to {max} values ({} has {total}, over {} parameters): every rank \
             must train the same model with the same configuration",
            group.label(),
            gather.ids.len()
        )));
    }
    let Some(device) = gather.flat.first().map(Tensor::device) else { return Ok(()) };
    let flat = Tensor::cat(gather.flat, 0);
    #[cfg(feature = "nccl")]
    if super::nccl::is_ready() && super::nccl::cuda_ordinal(&device).is_some() {
        // On the GPUs: no host copy.
        let flat = super::nccl::all_reduce_mean(flat);
        module.visit(&mut Scatter { grads, flat, offset: 0 });
        return Ok(());
    }
    let mut host: Vec<f32> = flat
        .into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| TrainError::Distributed(format!("gradients to the host: {e:?}")))?;
    group.all_reduce_mean_f32(&mut host);
    let flat = Tensor::<1>::from_data(TensorData::new(host, [total]), &device);
    module.visit(&mut Scatter { grads, flat, offset: 0 });
    Ok(())
}

/// The loss terms of the whole global batch: each value is the batch-size weighted mean over
/// the ranks, the batch size their sum. Identity for one process.
///
/// # Errors
/// [`TrainError::Distributed`] when the ranks log different numbers of terms.
pub fn all_reduce_terms(terms: StepTerms, group: &ProcessGroup) -> Result<StepTerms, TrainError> {
    if !group.is_distributed() {
        return Ok(terms);
    }
    let (fewest, most) = group.min_max(terms.terms.len() as i64);
    if fewest != most {
        return Err(TrainError::Distributed(format!("the ranks log {fewest} to {most} loss terms")));
    }
    let bs = terms.batch_size as f64;
    let mut buf: Vec<f64> = std::iter::once(bs).chain(terms.terms.iter().map(|(_, v)| v * bs)).collect();
    group.all_reduce_sum_f64(&mut buf);
    let total = buf[0];
    Ok(StepTerms {
        batch_size: total.round() as usize,
        terms: terms.terms.iter().zip(&buf[1..]).map(|(&(name, _), &sum)| (name, sum / total.max(1.0))).collect(),
    })
}

/// Hashes the bits of every float parameter (including the EMA copy and buffers).
struct Fingerprint {
    hasher: fnv::FnvHasher,
}

impl ModuleVisitor for Fingerprint {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let data = param.val().into_data();
        self.hasher.write(data.as_bytes());
    }
}

/// FNV-1a 64 of the bits of every float parameter of `module`, in visiting order: equal on two
/// ranks exactly when their replicas are bit-identical. Copies the parameters to the host.
pub fn parameter_fingerprint<M: Module>(module: &M) -> u64 {
    let mut v = Fingerprint { hasher: fnv::FnvHasher::default() };
    module.visit(&mut v);
    v.hasher.finish()
}

/// Checks that every rank of `group` holds bit-identical parameters (all ranks call it at the
/// same step) and returns this rank's fingerprint.
///
/// # Errors
/// [`TrainError::Distributed`] naming the ranks whose replicas differ from rank 0's.
pub fn check_replicas<M: Module>(module: &M, group: &ProcessGroup, step: u64) -> Result<u64, TrainError> {
    let mine = parameter_fingerprint(module);
    let all = group.all_gather_u64(mine);
    let differ: Vec<usize> = all.iter().enumerate().filter(|(_, f)| **f != all[0]).map(|(r, _)| r).collect();
    if !differ.is_empty() {
        return Err(TrainError::Distributed(format!(
            "after step {step} the parameters of rank(s) {differ:?} differ from rank 0's (fingerprints {all:016x?})"
        )));
    }
    Ok(mine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Device;

    #[test]
    fn one_process_keeps_gradients_and_terms() {
        let device = Device::flex().autodiff();
        let lin: Linear = LinearConfig::new(3, 2).init(&device);
        let loss = lin.forward(Tensor::<2>::ones([1, 3], &device)).sum();
        let mut grads = GradientsParams::from_grads(loss.backward(), &lin);
        let before = grads.get::<2>(lin.weight.id).unwrap().into_data();
        all_reduce_gradients(&lin, &mut grads, &ProcessGroup::single()).unwrap();
        assert_eq!(grads.get::<2>(lin.weight.id).unwrap().into_data(), before);
        let terms = all_reduce_terms(StepTerms::new(4).with("loss", 0.5), &ProcessGroup::single()).unwrap();
        assert_eq!((terms.batch_size, terms.get("loss")), (4, Some(0.5)));
    }

    #[test]
    fn gather_and_scatter_round_trip_every_shape() {
        // The flat layout the ranks exchange: scattering the gathered buffer back gives the
        // same gradients, shapes and ids.
        let device = Device::flex().autodiff();
        let lin: Linear = LinearConfig::new(3, 2).init(&device);
        let x = Tensor::<2>::from_floats([[1.0, -2.0, 0.5]], &device);
        let loss = lin.forward(x).square().sum();
        let grads = GradientsParams::from_grads(loss.backward(), &lin);
        let mut gather = Gather { grads: &grads, flat: Vec::new(), ids: Vec::new() };
        lin.visit(&mut gather);
        assert_eq!(gather.ids.len(), 2, "weight and bias");
        let flat = Tensor::cat(gather.flat, 0);
        assert_eq!(flat.dims(), [3 * 2 + 2]);
        let mut copy =
            GradientsParams::from_grads(lin.forward(Tensor::<2>::ones([1, 3], &device)).sum().backward(), &lin);
        lin.visit(&mut Scatter { grads: &mut copy, flat, offset: 0 });
        let weight = lin.weight.id;
        assert_eq!(grads.get::<2>(weight).unwrap().into_data(), copy.get::<2>(weight).unwrap().into_data());
        let bias = lin.bias.as_ref().unwrap().id;
        assert_eq!(grads.get::<1>(bias).unwrap().into_data(), copy.get::<1>(bias).unwrap().into_data());
    }

    #[test]
    fn fingerprints_see_every_bit() {
        let device = Device::flex();
        let a: Linear = LinearConfig::new(3, 2).init(&device);
        let mut b = a.clone();
        assert_eq!(parameter_fingerprint(&a), parameter_fingerprint(&b));
        let w = b.weight.val();
        b.weight = b.weight.map(|_| w.clone().add_scalar(1e-3));
        assert_ne!(parameter_fingerprint(&a), parameter_fingerprint(&b));
        assert_eq!(check_replicas(&a, &ProcessGroup::single(), 3).unwrap(), parameter_fingerprint(&a));
    }
}
