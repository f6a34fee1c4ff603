use super::PluginArgs;
use adainfer::plugin::config::TrainSection;
use adainfer::plugin::training::{read_data, select_features, train};
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Rows written by `adainfer collect`.
    #[arg(long)]
    data: PathBuf,
    /// svm, logistic or crf.
    #[arg(long)]
    classifier: String,
    /// Where to write the classifier (JSON).
    #[arg(long)]
    out: PathBuf,
    /// Comma-separated features to train on, a subset of those the rows were collected with (the
    /// paper's Table 6 from one `collect`); default: all of them.
    #[arg(long)]
    features: Option<String>,
    /// Hyper-parameters come from the config's [train] section (defaults without one).
    #[command(flatten)]
    plugin: PluginArgs,
}

pub fn run(a: Args) -> Result<()> {
    let params = match a.plugin.load()? {
        Some(c) => c.train,
        None => TrainSection::default(),
    };
    let (header, rows) = read_data(&a.data)?;
    let name = a.data.display().to_string();
    let (header, rows) = match &a.features {
        Some(list) => {
            let names: Vec<String> = list.split(',').map(|f| f.trim().to_string()).collect();
            select_features(&header, rows, &names, &name)?
        }
        None => (header, rows),
    };
    let (classifier, report) = train(&header, &rows, &a.classifier, &params, &name)?;
    classifier.save(&a.out)?;
    let s = &report.summary;
    let rows = match a.classifier.as_str() {
        "crf" => "rows (whole per-prompt sequences, not balanced)",
        _ => "balanced rows",
    };
    println!(
        "{} on features {:?}: trained on {} {rows} (of {}) from {} prompts",
        a.classifier, header.features, s.train_rows, report.available_rows, report.train_prompts
    );
    println!(
        "held out {} prompts ({} rows): precision {:.3}, recall {:.3} (class: exit, label {})",
        report.holdout_prompts, s.holdout_rows, s.precision, s.recall, header.label
    );
    println!(
        "implied on held-out prompts: {:.1}% exit before layer {}, mean exit layer {:.2}, \
         {:.1}% of exits at a label-1 layer",
        100.0 * s.exit_rate,
        header.identity.num_layers,
        s.mean_exit_layer,
        100.0 * report.exit_precision
    );
    println!(
        "threshold  exit rate  mean exit layer  exits at a label-1 layer   ([policy.{}] threshold)",
        a.classifier
    );
    for p in &report.sweep {
        println!(
            "{:>9.2}  {:>8.1}%  {:>15.2}  {:>23.1}%",
            p.threshold,
            100.0 * p.exit_rate,
            p.mean_exit_layer,
            100.0 * p.exit_precision
        );
    }
    println!("wrote {}", a.out.display());
    Ok(())
}
