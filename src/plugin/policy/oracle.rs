//! The oracle (analysis only): the first layer from which the top-1 token never changes again.
//! It cannot know that during a pass, so as a policy it runs densely and reports the layer in
//! hindsight; the eval harness calls [`oracle_exit_layer`] on recorded top-1s directly.

use super::ExitPolicy;
use crate::hook::Decision;
use crate::plugin::features::FeatureRow;

/// Layer (counted from 1) from which `top1_per_layer` (index 0 = layer 1) stays equal to its
/// last entry. 0 for an empty slice.
pub fn oracle_exit_layer(top1_per_layer: &[u32]) -> usize {
    let Some(last) = top1_per_layer.last() else {
        return 0;
    };
    let settled = top1_per_layer
        .iter()
        .rev()
        .take_while(|&t| t == last)
        .count();
    top1_per_layer.len() - settled + 1
}

#[derive(Default)]
pub struct Oracle {
    top1: Vec<u32>,
    num_layers: usize,
}

impl ExitPolicy for Oracle {
    fn name(&self) -> &str {
        "oracle"
    }

    fn decide(&mut self, row: &FeatureRow) -> Decision {
        if row.layer == 1 {
            self.top1.clear();
        }
        self.num_layers = row.num_layers;
        self.top1.push(row.top1);
        Decision::Continue
    }

    fn hindsight_exit(&self) -> Option<usize> {
        (self.top1.len() == self.num_layers && self.num_layers > 0)
            .then(|| oracle_exit_layer(&self.top1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_layer_of_the_final_run() {
        assert_eq!(oracle_exit_layer(&[5, 5, 5]), 1);
        assert_eq!(oracle_exit_layer(&[1, 2, 3, 3]), 3);
        assert_eq!(oracle_exit_layer(&[3, 2, 3]), 3);
        assert_eq!(oracle_exit_layer(&[3, 3, 2, 3, 3]), 4);
        assert_eq!(oracle_exit_layer(&[]), 0);
    }
}
