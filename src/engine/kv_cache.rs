//! Per-layer key/value cache.
//!
//! Every layer keeps its own length, because early exit and skip plans mean a layer can lag
//! behind the sequence: a pass that exits at block k leaves blocks k+1.. without entries for its
//! tokens. The engine checks lengths before appending and refuses to attend over such a hole
//! unless a fill strategy has repaired it (see `crate::engine::generate`).

use candle_core::{Result, Tensor};

/// Grows by whole chunks so decode appends in place instead of re-concatenating every step.
const CHUNK: usize = 256;

#[derive(Clone, Default)]
pub struct LayerKv {
    /// `[batch, kv_heads, capacity, head_dim]` buffers; only the first `len` positions are valid.
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
}

impl LayerKv {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append `[batch, kv_heads, seq, head_dim]` keys and values; returns all valid entries.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let seq = k.dim(2)?;
        let needed = self.len + seq;
        let capacity = self.k.as_ref().map(|t| t.dim(2)).transpose()?.unwrap_or(0);
        if needed > capacity {
            let new_capacity = needed.div_ceil(CHUNK) * CHUNK;
            self.k = Some(grow(self.k.as_ref(), k, self.len, new_capacity)?);
            self.v = Some(grow(self.v.as_ref(), v, self.len, new_capacity)?);
        }
        let (kb, vb) = (
            self.k.as_ref().expect("allocated"),
            self.v.as_ref().expect("allocated"),
        );
        kb.slice_set(&k.contiguous()?, 2, self.len)?;
        vb.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len = needed;
        Ok((kb.narrow(2, 0, needed)?, vb.narrow(2, 0, needed)?))
    }

    /// Valid keys and values, if any.
    pub fn get(&self) -> Result<Option<(Tensor, Tensor)>> {
        match (&self.k, &self.v) {
            (Some(k), Some(v)) if self.len > 0 => {
                Ok(Some((k.narrow(2, 0, self.len)?, v.narrow(2, 0, self.len)?)))
            }
            _ => Ok(None),
        }
    }

    /// Forget positions `len..` (speculative rollback). Never grows.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

fn grow(old: Option<&Tensor>, like: &Tensor, len: usize, capacity: usize) -> Result<Tensor> {
    let (b, h, _, d) = like.dims4()?;
    let fresh = Tensor::zeros((b, h, capacity, d), like.dtype(), like.device())?;
    if let Some(old) = old {
        if len > 0 {
            fresh.slice_set(&old.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
        }
    }
    Ok(fresh)
}

/// The cache of one sequence: one [`LayerKv`] per decoder block.
#[derive(Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![LayerKv::default(); num_layers],
        }
    }

    pub fn layer(&self, index: usize) -> &LayerKv {
        &self.layers[index]
    }

    pub fn layer_mut(&mut self, index: usize) -> &mut LayerKv {
        &mut self.layers[index]
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Positions seen by the sequence: the longest layer.
    pub fn seq_len(&self) -> usize {
        self.layers.iter().map(LayerKv::len).max().unwrap_or(0)
    }

    /// Per-layer lengths, for diagnostics and tests.
    pub fn layer_lens(&self) -> Vec<usize> {
        self.layers.iter().map(LayerKv::len).collect()
    }

    /// Layers that lack entries for some of the sequence's positions.
    pub fn holes(&self) -> Vec<usize> {
        let n = self.seq_len();
        (0..self.layers.len())
            .filter(|&i| self.layers[i].len() < n)
            .collect()
    }

    pub fn truncate(&mut self, len: usize) {
        self.layers.iter_mut().for_each(|l| l.truncate(len));
    }

    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = LayerKv::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn append_grows_and_truncates() {
        let mut kv = LayerKv::default();
        for step in 0..300u32 {
            let t = Tensor::full(step as f32, (1, 2, 1, 4), &Device::Cpu).unwrap();
            let (k, _) = kv.append(&t, &t).unwrap();
            assert_eq!(k.dim(2).unwrap(), step as usize + 1);
        }
        let (k, _) = kv.get().unwrap().unwrap();
        let vals: Vec<f32> = k
            .narrow(2, 257, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(vals.iter().all(|&x| x == 257.0), "entries survive growth");
        kv.truncate(10);
        assert_eq!(kv.len(), 10);
    }
}
