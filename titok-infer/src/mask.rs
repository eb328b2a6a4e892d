//! The `--mask` syntax of `titok generate --inpaint`: which of the K token positions to
//! regenerate.
//!
//! A comma-separated list of items, each one of
//! - `N`: position `N` (0-based);
//! - `A-B`: positions `A` to `B`, inclusive;
//! - `first`, `left` or `top`: the first half of the sequence, `0 .. K/2`;
//! - `second`, `right` or `bottom`: the second half, `K/2 .. K`;
//! - `all`: every position (plain generation).
//!
//! TiTok's tokens form a 1D sequence without a fixed spatial layout, so the "halves" are halves
//! of the sequence; which image regions they affect is learned by the model, not guaranteed.

use anyhow::{Result, bail};

/// Positions to regenerate (`true`) for a sequence of `k` tokens.
///
/// # Errors
/// For an unknown item, a position `>= k`, a reversed range, or a mask that selects nothing.
pub fn parse(spec: &str, k: usize) -> Result<Vec<bool>> {
    let mut mask = vec![false; k];
    let half = k / 2;
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (from, to) = match item.to_ascii_lowercase().as_str() {
            "first" | "left" | "top" => (0, half),
            "second" | "right" | "bottom" => (half, k),
            "all" => (0, k),
            other => match other.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (position(a, item)?, position(b, item)?);
                    if a > b {
                        bail!("mask range `{item}` is reversed (write {b}-{a})");
                    }
                    (a, b + 1)
                }
                None => {
                    let p = position(other, item)?;
                    (p, p + 1)
                }
            },
        };
        if to > k {
            bail!("mask item `{item}` reaches position {}, but the tokenizer has {k} tokens (0..={})", to - 1, k - 1);
        }
        mask[from..to].iter_mut().for_each(|m| *m = true);
    }
    if !mask.iter().any(|&m| m) {
        bail!("mask `{spec}` selects no token position (e.g. `0-15`, `right`, `all`)");
    }
    Ok(mask)
}

fn position(text: &str, item: &str) -> Result<usize> {
    text.trim().parse::<usize>().map_err(|_| {
        anyhow::anyhow!(
            "bad mask item `{item}`: expected a position, a range A-B, first/left/top, second/right/bottom or all"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(mask: &[bool]) -> Vec<usize> {
        mask.iter().enumerate().filter(|&(_, &m)| m).map(|(i, _)| i).collect()
    }

    #[test]
    fn items_ranges_and_halves() {
        assert_eq!(on(&parse("0-2, 5", 8).unwrap()), vec![0, 1, 2, 5]);
        assert_eq!(on(&parse("right", 8).unwrap()), vec![4, 5, 6, 7]);
        assert_eq!(on(&parse("top", 7).unwrap()), vec![0, 1, 2]);
        assert_eq!(on(&parse("bottom", 7).unwrap()), vec![3, 4, 5, 6]);
        assert_eq!(parse("all", 4).unwrap(), vec![true; 4]);
    }

    #[test]
    fn bad_specs_are_errors() {
        assert!(parse("8", 8).unwrap_err().to_string().contains("8 tokens"));
        assert!(parse("5-2", 8).unwrap_err().to_string().contains("reversed"));
        assert!(parse("middle", 8).unwrap_err().to_string().contains("bad mask item"));
        assert!(parse(" , ", 8).unwrap_err().to_string().contains("selects no token"));
    }
}
