//! Picking a few items spread evenly over a dataset (preview grids, validation subsets,
//! `--limit`): a sorted dataset keeps every class represented.

/// `min(n, len)` indices spread evenly over `0..len`: `i·len/m` for `i` in `0..m`, with
/// `m = min(n, len)`; increasing, distinct, the first is 0. Empty when `len` or `n` is 0.
pub fn spread_indices(len: usize, n: usize) -> impl Iterator<Item = usize> {
    let m = n.min(len);
    (0..m).map(move |i| i * len / m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_distinct_evenly_spread_and_clamped() {
        assert_eq!(spread_indices(10, 4).collect::<Vec<_>>(), [0, 2, 5, 7]);
        assert_eq!(spread_indices(3, 8).collect::<Vec<_>>(), [0, 1, 2], "at most len items");
        assert_eq!(spread_indices(0, 8).count(), 0);
        assert_eq!(spread_indices(8, 0).count(), 0);
        // 1000 classes of 50 sorted images each, 10 picks: ten different classes.
        let classes: Vec<usize> = spread_indices(50_000, 10).map(|i| i / 50).collect();
        assert_eq!(classes, (0..10).map(|c| c * 100).collect::<Vec<_>>());
    }
}
