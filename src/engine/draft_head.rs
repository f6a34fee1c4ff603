//! Draft heads that score part of the vocabulary (FR-Spec, arXiv 2502.14856): a layer draft
//! pays the LM head on every draft token, and on small models that head is a large share of a
//! step (SmolLM2: 576 × 49,152, ~21% of a token's compute). Scoring only the first `n` tokens
//! cuts it in proportion; verification always uses the full head, so the text is unchanged —
//! only drafts outside the subset are lost.
//!
//! The subset is the vocabulary's first `n` ids. Byte-level BPE and SentencePiece vocabularies
//! list tokens in merge / score order, learnt on the tokenizer's own (large) corpus, so their
//! first ids are roughly the most frequent tokens: no frequency file to ship or match (on
//! SmolLM2's answers they covered more tokens than a ranking counted on AG News + SST-2 text).

use super::model::{DecoderModel, LmHead};
use anyhow::Result;
use candle_core::Tensor;

pub struct DraftHead {
    head: LmHead,
    vocab: usize,
}

impl DraftHead {
    /// The model's head over its first `n` tokens; refused when `n` is 0 or beyond the vocabulary.
    pub fn new(model: &DecoderModel, n: usize) -> Result<Self> {
        Ok(Self {
            head: model.head().first_rows(n)?,
            vocab: model.config.vocab_size,
        })
    }

    /// Full-vocabulary logits of the last row of `hidden` (`[1, 1, hidden]`): the subset's
    /// scores, −∞ for every other token (a draft never proposes them).
    pub fn logits(&self, hidden: &Tensor) -> Result<Vec<f32>> {
        let mut logits = self.head.logits(hidden)?.flatten_all()?.to_vec1::<f32>()?;
        logits.resize(self.vocab.max(logits.len()), f32::NEG_INFINITY);
        Ok(logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::synthetic::SyntheticSpec;
    use candle_core::DType;

    #[test]
    fn scores_the_first_ids_as_the_full_head_does_and_nothing_else() {
        let model = SyntheticSpec::tiny(2).build(DType::F32).unwrap();
        let width = model.config.hidden_size;
        let hidden = Tensor::randn(0f32, 1.0, (1, 1, width), model.device()).unwrap();
        let full: Vec<f32> = model
            .head()
            .logits(&hidden)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let draft = DraftHead::new(&model, 100)
            .unwrap()
            .logits(&hidden)
            .unwrap();
        assert_eq!(draft.len(), full.len());
        for (i, (d, f)) in draft.iter().zip(&full).enumerate() {
            if i < 100 {
                assert!((d - f).abs() < 1e-5, "id {i}: {d} vs {f}");
            } else {
                assert_eq!(*d, f32::NEG_INFINITY, "id {i}");
            }
        }
        for bad in [0, full.len() + 1] {
            let err = DraftHead::new(&model, bad)
                .err()
                .expect("refused")
                .to_string();
            assert!(err.contains(&bad.to_string()), "{err}");
        }
    }
}
