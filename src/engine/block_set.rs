//! A set of decoder blocks, written as 1-based block numbers (`[10, 15, 20]` in a config,
//! `10+15+20` or `10,15,20` on a command line): the blocks a skip-layer draft leaves out.
//!
//! A fixed-size bit set rather than a `Vec`, so the settings that hold it stay `Copy` like the
//! rest of `[generation]`.

use crate::hook::SkipPlan;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Most blocks a set can name (the deepest open models have ~130).
pub const MAX_BLOCKS: usize = 256;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<usize>", into = "Vec<usize>")]
pub struct BlockSet {
    bits: [u64; MAX_BLOCKS / 64],
}

impl BlockSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// From 0-based block indices; errors on one at or past [`MAX_BLOCKS`].
    pub fn from_indices(indices: impl IntoIterator<Item = usize>) -> Result<Self> {
        let mut set = Self::new();
        for i in indices {
            if i >= MAX_BLOCKS {
                bail!(
                    "block {} is past the most a set can hold ({MAX_BLOCKS})",
                    i + 1
                );
            }
            set.insert(i);
        }
        Ok(set)
    }

    /// Add 0-based block `index` (< [`MAX_BLOCKS`]).
    pub fn insert(&mut self, index: usize) {
        self.bits[index / 64] |= 1 << (index % 64);
    }

    pub fn contains(&self, index: usize) -> bool {
        index < MAX_BLOCKS && self.bits[index / 64] & (1 << (index % 64)) != 0
    }

    pub fn len(&self) -> usize {
        self.bits.iter().map(|b| b.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// 0-based indices, ascending.
    pub fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MAX_BLOCKS).filter(|&i| self.contains(i))
    }

    /// Largest 0-based index, if any.
    pub fn last(&self) -> Option<usize> {
        self.indices().last()
    }

    pub fn to_skip_plan(&self) -> SkipPlan {
        SkipPlan::from_layers(self.indices())
    }

    /// Refuses a set that names a block the model lacks or leaves no block to run.
    pub fn check_fits(&self, num_layers: usize) -> Result<()> {
        if let Some(last) = self.last().filter(|&l| l >= num_layers) {
            bail!(
                "block {} is not in the model: it has {num_layers} blocks (counted from 1)",
                last + 1
            );
        }
        if num_layers > 0 && self.len() >= num_layers {
            bail!("skipping all {num_layers} blocks leaves nothing to draft with");
        }
        Ok(())
    }
}

impl TryFrom<Vec<usize>> for BlockSet {
    type Error = anyhow::Error;
    /// 1-based block numbers.
    fn try_from(numbers: Vec<usize>) -> Result<Self> {
        if numbers.contains(&0) {
            bail!("blocks are counted from 1; got 0");
        }
        Self::from_indices(numbers.into_iter().map(|n| n - 1))
    }
}

impl From<BlockSet> for Vec<usize> {
    fn from(set: BlockSet) -> Self {
        set.indices().map(|i| i + 1).collect()
    }
}

impl std::str::FromStr for BlockSet {
    type Err = anyhow::Error;
    /// `10+15+20` or `10,15,20` (1-based); empty = no block.
    fn from_str(s: &str) -> Result<Self> {
        let numbers = s
            .split(['+', ','])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<usize>().with_context(|| {
                    format!("block list {s:?}: {p:?} is not a block number (counted from 1)")
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::try_from(numbers).with_context(|| format!("block list {s:?}"))
    }
}

impl std::fmt::Display for BlockSet {
    /// `10+15+20` (1-based; `+` so the list fits inside a comma-separated mode list).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let numbers: Vec<String> = self.indices().map(|i| (i + 1).to_string()).collect();
        f.write_str(&numbers.join("+"))
    }
}

impl std::fmt::Debug for BlockSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockSet[{self}]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_numbers_round_trip_through_text_and_toml() {
        let set: BlockSet = "20+10, 15".parse().unwrap();
        assert_eq!(set.indices().collect::<Vec<_>>(), vec![9, 14, 19]);
        assert_eq!(set.to_string(), "10+15+20");
        assert_eq!(set.len(), 3);
        assert!(set.contains(14) && !set.contains(15));
        #[derive(Serialize, Deserialize)]
        struct T {
            skip: BlockSet,
        }
        let text = toml::to_string(&T { skip: set }).unwrap();
        assert_eq!(text.trim(), "skip = [10, 15, 20]");
        assert_eq!(toml::from_str::<T>(&text).unwrap().skip, set);
        assert!("".parse::<BlockSet>().unwrap().is_empty());
        let far = BlockSet::from_indices([255]).unwrap();
        assert_eq!(far.to_string(), "256");
    }

    #[test]
    fn bad_block_numbers_are_refused_naming_them() {
        let zero = "0+3".parse::<BlockSet>().unwrap_err();
        assert!(format!("{zero:#}").contains("counted from 1"), "{zero:#}");
        let word = "3+x".parse::<BlockSet>().unwrap_err();
        assert!(format!("{word:#}").contains("\"x\""), "{word:#}");
        let big = "257".parse::<BlockSet>().unwrap_err();
        assert!(format!("{big:#}").contains("257"), "{big:#}");
        let set: BlockSet = "4+31".parse().unwrap();
        let e = set.check_fits(30).unwrap_err().to_string();
        assert!(e.contains("block 31") && e.contains("30 blocks"), "{e}");
        assert!(set.check_fits(31).is_ok());
        let all: BlockSet = "1+2".parse().unwrap();
        assert!(all
            .check_fits(2)
            .unwrap_err()
            .to_string()
            .contains("nothing"));
    }
}
