//! Early-exit passes that keep the KV cache usable.
//!
//! When token t exits after block k, blocks k+1.. hold no keys/values for it, and every later
//! token attends to that hole. [`step`] runs one pass layer by layer and repairs the hole the
//! way [`KvFill`] says:
//! - `propagate` projects the exited hidden state into the skipped blocks' K/V right away
//!   (approximate: deeper blocks see t as if its residual stream had stopped changing);
//! - `recompute` (and `dense_after_prefill`, for the prompt) keeps the exited hidden state in a
//!   [`Backlog`] and runs those positions through the missing blocks together with the next
//!   token that reaches them (exact: every entry equals the dense cache's once filled).

use super::draft_head::DraftHead;
use super::kv_cache::KvCache;
use super::model::{DecoderModel, ExitRecord};
use crate::hook::{Decision, LayerHook, LayerView, PassInfo};
use anyhow::{bail, Result};
use candle_core::{IndexOp, Tensor};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// How the K/V entries that an early exit leaves out are filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvFill {
    /// Approximate: the skipped blocks get K/V projected from the exited hidden state.
    Propagate,
    /// Exact: skipped positions run through the missing blocks with the next token that does.
    Recompute,
    /// Exit only in the prompt pass, run the prompt through the skipped blocks, decode densely.
    DenseAfterPrefill,
}

impl KvFill {
    pub const ALL: [KvFill; 3] = [
        KvFill::Propagate,
        KvFill::Recompute,
        KvFill::DenseAfterPrefill,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KvFill::Propagate => "propagate",
            KvFill::Recompute => "recompute",
            KvFill::DenseAfterPrefill => "dense_after_prefill",
        }
    }

    /// Whether every cache entry ends up equal to the dense cache of the same tokens.
    pub fn is_exact_cache(self) -> bool {
        !matches!(self, KvFill::Propagate)
    }
}

impl std::fmt::Display for KvFill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KvFill {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        KvFill::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown KV fill strategy {s:?}: expected propagate, recompute or dense_after_prefill"
                )
            })
    }
}

/// Consecutive positions that blocks `from_layer..` still lack, with the residual stream
/// (`[1, rows, hidden]`) that enters `from_layer`.
#[derive(Clone)]
struct Group {
    from_layer: usize,
    hidden: Tensor,
}

/// Positions waiting for their deeper blocks, oldest first. Groups go from deep to shallow:
/// a later exit below an older group's layer carries that group's rows no further than itself.
#[derive(Clone, Default)]
pub struct Backlog {
    groups: Vec<Group>,
}

impl Backlog {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Positions waiting, all groups together.
    pub fn rows(&self) -> Result<usize> {
        self.groups.iter().map(|g| Ok(g.hidden.dim(1)?)).sum()
    }

    /// Put the rows waiting for block `index` in front of `x` (they are older positions).
    fn merge(&mut self, index: usize, x: Option<Tensor>) -> Result<Option<Tensor>> {
        if self.groups.last().is_none_or(|g| g.from_layer != index) {
            return Ok(x);
        }
        let group = self.groups.pop().expect("checked above");
        Ok(Some(match x {
            Some(x) => Tensor::cat(&[&group.hidden, &x], 1)?,
            None => group.hidden,
        }))
    }

    fn push(&mut self, from_layer: usize, hidden: Tensor) -> Result<()> {
        match self.groups.last_mut() {
            Some(g) if g.from_layer == from_layer => {
                g.hidden = Tensor::cat(&[&g.hidden, &hidden], 1)?;
            }
            Some(g) if g.from_layer < from_layer => {
                bail!(
                    "internal: backlog out of order ({from_layer} after {})",
                    g.from_layer
                )
            }
            _ => self.groups.push(Group { from_layer, hidden }),
        }
        Ok(())
    }
}

/// Final hidden states of every row a full-depth pass carried, the current tokens last.
pub struct Completed {
    pub first_position: usize,
    /// `[1, rows, hidden]`, before the final norm.
    pub hidden: Tensor,
}

/// The result of one [`step`].
pub struct StepOutput {
    /// Logits of the last current token: the exit probe's, or the final head's.
    pub logits: Vec<f32>,
    pub exit: Option<ExitRecord>,
    /// Blocks the current tokens went through: planned skips do not count, so a static
    /// policy's savings show up here as they do in `PassOutput::layers_run`.
    pub depth: usize,
    /// Set when the pass reached the last block.
    pub completed: Option<Completed>,
    /// Seconds spent inside the hook (probes and policy), for the probe-cost report.
    pub hook_seconds: f64,
}

fn check_hole(cache: &KvCache, index: usize, position: usize) -> Result<()> {
    let len = cache.layer(index).len();
    if len != position {
        bail!(
            "KV cache hole: layer {} holds {len} positions but the rows reaching it start at {position}",
            index + 1
        );
    }
    Ok(())
}

/// Run `tokens` after what `cache` holds, letting `hook` stop the pass, and fill the hole an
/// exit leaves as `fill` says. Rows in `backlog` join the pass at the block they lack.
pub fn step(
    model: &DecoderModel,
    tokens: &[u32],
    cache: &mut KvCache,
    backlog: &mut Backlog,
    hook: Option<&mut dyn LayerHook>,
    fill: KvFill,
) -> Result<StepOutput> {
    step_with_draft_head(model, tokens, cache, backlog, hook, fill, None)
}

/// [`step`], where a pass that exits early scores its last token with `draft_head` (a
/// vocabulary subset) instead of the full head, unless the hook already probed the full one.
pub fn step_with_draft_head(
    model: &DecoderModel,
    tokens: &[u32],
    cache: &mut KvCache,
    backlog: &mut Backlog,
    mut hook: Option<&mut dyn LayerHook>,
    fill: KvFill,
    draft_head: Option<&DraftHead>,
) -> Result<StepOutput> {
    let n = model.num_layers();
    let seq = tokens.len();
    let offset = cache.seq_len();
    if seq == 0 {
        bail!("a forward pass needs at least one token");
    }
    if offset + seq > model.config.max_position_embeddings {
        bail!(
            "sequence of {} tokens exceeds max_position_embeddings ({})",
            offset + seq,
            model.config.max_position_embeddings
        );
    }
    if fill == KvFill::Propagate && !backlog.is_empty() {
        bail!("internal: propagate never leaves a backlog");
    }
    let mut hook_seconds = 0.0;
    let plan = match hook.as_deref_mut() {
        Some(h) => h.begin_pass(&PassInfo {
            num_layers: n,
            num_tokens: seq,
            offset,
        })?,
        None => crate::hook::SkipPlan::none(),
    };
    if !plan.is_empty() && fill != KvFill::Propagate {
        bail!(
            "hook asked to skip blocks {:?}, which kv_fill = {fill} cannot repair exactly \
             (only propagate fills planned skips); use exits, or kv_fill = propagate",
            plan.layers().map(|i| i + 1).collect::<Vec<_>>()
        );
    }
    let mut x = model.embed(tokens, offset)?;
    let mut start = offset;
    let mut exit = None;
    let mut exit_logits = None;
    let mut depth = 0;
    for index in 0..n {
        x = backlog.merge(index, Some(x))?.expect("x stays present");
        start = offset + seq - x.dim(1)?;
        check_hole(cache, index, start)?;
        if plan.skips(index) {
            // The block is the identity for these rows; give it K/V from what enters it.
            model.fill_layer_kv(index, &x, cache)?;
            continue;
        }
        let (attn_out, mlp_out, hidden) = model.run_layer_parts(index, &x, cache)?;
        let input = std::mem::replace(&mut x, hidden);
        depth += 1;
        let Some(h) = hook.as_deref_mut() else {
            continue;
        };
        let timer = Instant::now();
        let carried = x.dim(1)? - seq;
        let current = |t: &Tensor| t.narrow(1, carried, seq);
        let (input, attn_out, mlp_out, hidden) = (
            current(&input)?,
            current(&attn_out)?,
            current(&mlp_out)?,
            current(&x)?,
        );
        let mut view = LayerView::new(index, n, &input, &attn_out, &mlp_out, &hidden, model.head());
        let decision = h.after_layer(&mut view)?;
        if decision == Decision::Exit && index + 1 < n {
            exit = Some(ExitRecord {
                layer: index + 1,
                hook: h.name().to_string(),
                answer: view.take_answer(),
            });
            exit_logits = view.take_full_probe().map(|p| p.logits().to_vec());
        }
        hook_seconds += timer.elapsed().as_secs_f64();
        if exit.is_some() {
            break;
        }
    }
    let rows = x.dim(1)?;
    let last = x.i((0, rows - 1..rows))?;
    let logits = match (exit_logits, draft_head) {
        (Some(l), _) => l,
        (None, Some(draft)) if exit.is_some() => draft.logits(&last)?,
        (None, _) => model.head().logits(&last)?.squeeze(0)?.to_vec1()?,
    };
    let completed = match &exit {
        None => Some(Completed {
            first_position: start,
            hidden: x,
        }),
        Some(e) if fill == KvFill::Propagate => {
            // CALM-style state copying: deeper blocks see the exited state as their input.
            for index in e.layer..n {
                model.fill_layer_kv(index, &x, cache)?;
            }
            None
        }
        Some(e) => {
            backlog.push(e.layer, x)?;
            None
        }
    };
    Ok(StepOutput {
        logits,
        exit,
        depth,
        completed,
        hook_seconds,
    })
}

/// Run every backlog position through the blocks it lacks, so the cache holds every block of
/// every position (exactly the dense entries). Returns their final hidden states, if any.
pub fn flush(
    model: &DecoderModel,
    cache: &mut KvCache,
    backlog: &mut Backlog,
) -> Result<Option<Completed>> {
    let Some(first) = backlog.groups.last().map(|g| g.from_layer) else {
        return Ok(None);
    };
    let end = cache.seq_len();
    let mut x = None;
    for index in first..model.num_layers() {
        let rows = backlog.merge(index, x)?.expect("the first group joins");
        let start = end - rows.dim(1)?;
        check_hole(cache, index, start)?;
        x = Some(model.run_layer(index, &rows, cache)?);
    }
    let hidden = x.expect("at least one block ran");
    Ok(Some(Completed {
        first_position: end - hidden.dim(1)?,
        hidden,
    }))
}
