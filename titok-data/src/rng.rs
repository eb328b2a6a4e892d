//! Counter-based randomness for the data pipeline: every random choice is a pure function of
//! `(seed, epoch, index)`, so any worker, any number of workers and a resumed run draw the same
//! crops, flips and epoch orders. SplitMix64 (Steele et al., 2014) keeps the stream stable
//! across `rand` versions, whose `StdRng` is explicitly not reproducible between releases.

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct ItemRng {
    state: u64,
}

impl ItemRng {
    /// The stream for one `(seed, epoch, index)` triple. `stream` separates independent uses
    /// (augmentation, epoch order) of the same triple.
    pub fn new(seed: u64, stream: u64, epoch: u64, index: u64) -> Self {
        let mut state = mix(seed ^ 0x5851_F42D_4C95_7F2D);
        for word in [stream, epoch, index] {
            state = mix(state ^ word);
        }
        Self { state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// A uniform integer in `0..=max` (multiply-shift; bias below 2^-32 for `max < 2^32`).
    pub fn below_or_equal(&mut self, max: u32) -> u32 {
        ((u128::from(self.next_u64()) * (u128::from(max) + 1)) >> 64) as u32
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }
}

/// The SplitMix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Stream id of the per-item augmentation draws.
pub(crate) const AUGMENT_STREAM: u64 = 1;
/// Stream id of the epoch order.
const ORDER_STREAM: u64 = 2;

/// The order in which epoch `epoch` visits a dataset of `len` items: a permutation of
/// `0..len` that depends only on `(seed, epoch)` (Fisher-Yates). Feed it to
/// `burn::data::dataset::transform::SelectionDataset::from_indices_checked` (slice it to resume
/// mid-epoch) and leave the data loader's own shuffling off.
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = ItemRng::new(seed, ORDER_STREAM, epoch, 0);
    for i in (1..len).rev() {
        let j = ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
        order.swap(i, j);
    }
    order
}
