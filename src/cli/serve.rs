use adainfer::serve::{hooks_for, AdaptiveOverride, EngineConfig, Server};
use anyhow::{Context, Result};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Engine config (TOML: [model], [scheduler], [sampling], [adaptive]).
    #[arg(long)]
    config: PathBuf,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Turn AdaInfer on with this plugin config, whatever the engine config says.
    #[arg(long, value_name = "PLUGIN.toml", conflicts_with = "dense")]
    adaptive: Option<PathBuf>,
    /// Serve the plain dense engine, whatever the engine config says.
    #[arg(long)]
    dense: bool,
    /// Override a plugin config value, e.g. `--set policy.threshold=0.6` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

pub fn run(a: Args) -> Result<()> {
    let mut config = EngineConfig::load(&a.config)?;
    config.apply(match (a.adaptive, a.dense) {
        (Some(plugin), _) => AdaptiveOverride::Plugin(plugin),
        (None, true) => AdaptiveOverride::Dense,
        (None, false) => AdaptiveOverride::FromFile,
    });
    config.adaptive.set.extend(a.set);
    let engine = config.load_engine()?;
    let hooks = hooks_for(&config, &engine)?;
    let policy = hooks.default_policy().to_string();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let server = Server::start(&config, engine, hooks, SocketAddr::new(a.host, a.port)).await?;
        eprintln!(
            "serving {} (default policy {policy}) on http://{}  (Ctrl-C stops)",
            config.model_name(),
            server.addr
        );
        server
            .run_until(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    })
}
