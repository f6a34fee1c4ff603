//! Which hook answers a request: the seam between the server and the AdaInfer plugin.
//!
//! The worker asks a [`HookFactory`] for a fresh hook per request (hooks keep per-sequence
//! state). `dense` always means no hook at all, so a dense request runs exactly the library's
//! dense generation whatever the server's default policy is.

use crate::hook::LayerHook;
use crate::Engine;
use anyhow::{bail, Result};

/// The policy name that means "no hook": every layer runs.
pub const DENSE: &str = "dense";

pub trait HookFactory: Send {
    /// The policy a request gets when it names none.
    fn default_policy(&self) -> &str;

    /// A fresh hook for `policy`, or `None` for dense. Unknown or unavailable policies are
    /// errors whose message is shown to the client.
    fn make(&self, engine: &Engine, policy: &str) -> Result<Option<Box<dyn LayerHook>>>;
}

/// The server with AdaInfer off: only `dense`.
pub struct DenseOnly;

impl HookFactory for DenseOnly {
    fn default_policy(&self) -> &str {
        DENSE
    }

    fn make(&self, _engine: &Engine, policy: &str) -> Result<Option<Box<dyn LayerHook>>> {
        if policy != DENSE {
            bail!(
                "policy {policy:?} is not available: this server runs dense only \
                 (start it with --adaptive PLUGIN.toml or [adaptive] enabled = true)"
            );
        }
        Ok(None)
    }
}
