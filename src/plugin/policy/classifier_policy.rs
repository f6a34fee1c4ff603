//! `svm` and `logistic`: a trained classifier over the selected features says when to exit.

use super::ExitPolicy;
use crate::hook::Decision;
use crate::plugin::classifier::Classifier;
use crate::plugin::config::ClassifierParams;
use crate::plugin::features::FeatureRow;
use crate::Engine;
use anyhow::{bail, Context, Result};

pub struct ClassifierPolicy {
    name: &'static str,
    classifier: Classifier,
    threshold: f64,
}

impl ClassifierPolicy {
    pub fn load(
        kind: &str,
        params: &ClassifierParams,
        engine: &Engine,
        features: &[String],
        label_tokens: Option<&[u32]>,
    ) -> Result<Self> {
        let path = &params.classifier;
        let classifier = Classifier::load(path)?;
        if classifier.kind() != kind {
            bail!(
                "classifier {} is a {} model, but policy kind is {kind}",
                path.display(),
                classifier.kind()
            );
        }
        classifier
            .check_compatible(&engine.identity, features, label_tokens)
            .with_context(|| format!("classifier {} does not fit", path.display()))?;
        Ok(Self::new(classifier, params.threshold))
    }

    pub fn new(classifier: Classifier, threshold: Option<f64>) -> Self {
        let name = classifier.kind();
        let threshold = threshold.unwrap_or_else(|| classifier.default_threshold());
        Self {
            name,
            classifier,
            threshold,
        }
    }
}

impl ExitPolicy for ClassifierPolicy {
    fn name(&self) -> &str {
        self.name
    }

    fn decide(&mut self, row: &FeatureRow) -> Decision {
        if self.classifier.score(&row.values) >= self.threshold {
            Decision::Exit
        } else {
            Decision::Continue
        }
    }
}
