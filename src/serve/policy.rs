//! Which hook answers a request: the seam between the server and the AdaInfer plugin.
//!
//! The worker asks a [`HookFactory`] for a fresh hook per request (hooks keep per-sequence
//! state). `dense` always means no hook at all, so a dense request runs exactly the library's
//! dense generation whatever the server's default policy is.

use super::config::EngineConfig;
use crate::hook::{Decision, LayerHook, LayerView, PassInfo, SkipPlan};
use crate::plugin::{AdaInfer, PluginConfig};
use crate::Engine;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::sync::Mutex;

/// The policy name that means "no hook": every layer runs.
pub const DENSE: &str = "dense";

pub trait HookFactory: Send + Sync {
    /// The policy a request gets when it names none.
    fn default_policy(&self) -> &str;

    /// A fresh hook for `policy`, or `None` for dense. Unknown or unavailable policies are
    /// errors whose message is shown to the client.
    fn make(&self, engine: &Engine, policy: &str) -> Result<Option<Box<dyn LayerHook>>>;

    /// Whether `policy`'s hook only plans skips (a static policy), so its requests can share a
    /// batch. Unknown policies are not.
    fn plans_only(&self, engine: &Engine, policy: &str) -> bool {
        matches!(self.make(engine, policy), Ok(Some(hook)) if !hook.watches_layers())
    }
}

/// The hooks an engine config asks for: dense only, or the AdaInfer plugin's policies. The
/// plugin's own policy is built once here, so a bad plugin config fails at start-up.
pub fn hooks_for(config: &EngineConfig, engine: &Engine) -> Result<Box<dyn HookFactory>> {
    let Some(path) = config.plugin() else {
        return Ok(Box::new(DenseOnly));
    };
    let plugin = PluginConfig::load(path, &config.adaptive.set)?;
    plugin.refuse_exit_heads_for("the server")?;
    AdaInfer::from_config(&plugin, engine).with_context(|| {
        format!(
            "cannot build the default policy of plugin config {} for model {}",
            path.display(),
            config.model.path.display()
        )
    })?;
    Ok(Box::new(PluginHooks {
        plugin,
        plans_only: Default::default(),
    }))
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

/// AdaInfer on: the plugin config's policy by default, any other kind on request.
pub struct PluginHooks {
    plugin: PluginConfig,
    /// [`HookFactory::plans_only`] per policy, known after its first hook: the worker asks for
    /// every queued request, and building a hook can read a classifier file.
    plans_only: Mutex<HashMap<String, bool>>,
}

impl HookFactory for PluginHooks {
    fn default_policy(&self) -> &str {
        &self.plugin.policy.kind
    }

    fn make(&self, engine: &Engine, policy: &str) -> Result<Option<Box<dyn LayerHook>>> {
        if policy == DENSE {
            return Ok(None);
        }
        Ok(Some(Box::new(AdaInfer::for_policy(
            &self.plugin,
            engine,
            policy,
        )?)))
    }

    fn plans_only(&self, engine: &Engine, policy: &str) -> bool {
        let mut known = self.plans_only.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&answer) = known.get(policy) {
            return answer;
        }
        // Only policies that exist are remembered: clients choose the names.
        let Ok(hook) = self.make(engine, policy) else {
            return false;
        };
        let answer = hook.is_some_and(|h| !h.watches_layers());
        known.insert(policy.to_string(), answer);
        answer
    }
}

/// Passes a hook through, remembering whether it skipped layers up front (static policies), so a
/// mode that cannot repair such skips is reported as the request's fault, not the server's.
pub struct PlanWatch<'h> {
    inner: &'h mut dyn LayerHook,
    pub planned_skips: bool,
}

impl<'h> PlanWatch<'h> {
    pub fn new(inner: &'h mut dyn LayerHook) -> Self {
        Self {
            inner,
            planned_skips: false,
        }
    }
}

impl LayerHook for PlanWatch<'_> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn begin_pass(&mut self, info: &PassInfo) -> Result<SkipPlan> {
        let plan = self.inner.begin_pass(info)?;
        self.planned_skips |= !plan.is_empty();
        Ok(plan)
    }

    fn after_layer(&mut self, view: &mut LayerView<'_>) -> Result<Decision> {
        self.inner.after_layer(view)
    }

    fn watches_layers(&self) -> bool {
        self.inner.watches_layers()
    }
}
