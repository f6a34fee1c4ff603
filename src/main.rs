use clap::Parser;

fn main() {
    let cli = adainfer_cli::Cli::parse();
    if let Err(e) = adainfer_cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

#[path = "cli/mod.rs"]
mod adainfer_cli;
