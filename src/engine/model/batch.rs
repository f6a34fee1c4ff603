//! One decode step for several sequences at once (server batching).
//!
//! Each sequence keeps its own KV cache and position, so attention runs row by row; the norms,
//! the MLP and the LM head — most of a block's weights — run on all rows together, and with the
//! few-row matmul (`rows_matmul`) the weights are streamed once per step instead of once per
//! sequence.

use super::{check_vocabulary, DecoderModel, Masks, Tensor};
use crate::engine::KvCache;
use crate::hook::SkipPlan;
use anyhow::{bail, Result};

impl DecoderModel {
    /// Logits after `tokens[r]` for every row `r`, where `tokens[r]` follows what `caches[r]`
    /// holds. Equal, row for row, to a single-token pass on each cache: dense with an empty
    /// `plan`; with a static policy's plan, as `kv_fill::step` runs it with `propagate` (a
    /// skipped block is the identity and gets K/V from the stream that enters it).
    pub fn decode_batch(
        &self,
        tokens: &[u32],
        caches: &mut [&mut KvCache],
        plan: &SkipPlan,
    ) -> Result<Vec<Vec<f32>>> {
        if tokens.is_empty() || tokens.len() != caches.len() {
            bail!(
                "a batch step needs one token per cache, got {} tokens for {} caches",
                tokens.len(),
                caches.len()
            );
        }
        let offsets: Vec<usize> = caches.iter().map(|c| c.seq_len()).collect();
        let limit = self.config.max_position_embeddings;
        if let Some(r) = offsets.iter().position(|&o| o + 1 > limit) {
            bail!("row {r} would exceed max_position_embeddings ({limit})");
        }
        let masks = offsets
            .iter()
            .map(|&o| Masks::new(&self.windows, 1, o, &self.device))
            .collect::<Result<Vec<_>>>()?;
        check_vocabulary("token", tokens, self.config.vocab_size)?;
        // [rows, 1, hidden]: one sequence of one token per row, each at its own position.
        let mut x = self.embedding.lookup(tokens, &offsets)?.unsqueeze(1)?;
        for (index, layer) in self.layers.iter().enumerate() {
            for (r, cache) in caches.iter_mut().enumerate() {
                let held = cache.layer_mut(index).len();
                if held != offsets[r] {
                    bail!(
                        "KV cache hole in row {r}: layer {} holds {held} positions, the row is at {}",
                        index + 1,
                        offsets[r]
                    );
                }
            }
            if plan.skips(index) {
                for (r, cache) in caches.iter_mut().enumerate() {
                    self.fill_layer_kv(index, &x.narrow(0, r, 1)?, cache)?;
                }
                continue;
            }
            let attention = layer.attention();
            let out = layer.forward(&x, &mut |normed| {
                let rows = caches
                    .iter_mut()
                    .enumerate()
                    .map(|(r, cache)| {
                        attention.forward(
                            &normed.narrow(0, r, 1)?,
                            offsets[r],
                            masks[r].get(attention.window()),
                            cache.layer_mut(index),
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Tensor::cat(&rows, 0)?)
            })?;
            x = out.hidden;
        }
        let logits = self.head.logits(&x.squeeze(1)?)?;
        (0..tokens.len())
            .map(|r| Ok(logits.get(r)?.to_vec1::<f32>()?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::synthetic::SyntheticSpec;
    use crate::engine::Outputs;
    use crate::hook::SkipPlan;
    use candle_core::DType;

    #[test]
    fn a_batch_step_equals_each_sequence_stepped_alone() {
        let mut spec = SyntheticSpec::tiny(3);
        spec.model_type = "mistral";
        let model = spec.build(DType::F32).unwrap();
        let prompts: [&[u32]; 3] = [&[5, 9, 100, 7], &[3], &[42, 17, 8, 8, 1, 250]];
        let mut alone = Vec::new();
        let mut caches = Vec::new();
        for p in prompts {
            let mut cache = model.new_cache();
            model
                .forward(p, &mut cache, None, Outputs::LastToken)
                .unwrap();
            let mut reference = model.new_cache();
            model
                .forward(p, &mut reference, None, Outputs::LastToken)
                .unwrap();
            caches.push(cache);
            alone.push(reference);
        }
        let next = [11u32, 12, 13];
        for step in 0..2 {
            let mut refs: Vec<&mut crate::engine::KvCache> = caches.iter_mut().collect();
            let batched = model
                .decode_batch(&next, &mut refs, &SkipPlan::none())
                .unwrap();
            for (r, cache) in alone.iter_mut().enumerate() {
                let want = model
                    .forward(&[next[r]], cache, None, Outputs::LastToken)
                    .unwrap()
                    .last_logits()
                    .unwrap();
                let worst = want
                    .iter()
                    .zip(&batched[r])
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst < 1e-4, "step {step} row {r}: max |diff| {worst}");
            }
        }
        let e = model
            .decode_batch(&[1, 2], &mut [], &SkipPlan::none())
            .unwrap_err()
            .to_string();
        assert!(e.contains("one token per cache"), "{e}");
    }
}
