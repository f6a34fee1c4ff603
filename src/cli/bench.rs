use super::ModelArgs;
use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(_a: Args) -> Result<()> {
    anyhow::bail!("bench: not implemented yet")
}
