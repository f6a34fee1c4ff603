//! `svm`, `logistic` and `crf`: a trained classifier over the selected features says when to
//! exit (the CRF reading the pass's layers in order).

use super::ExitPolicy;
use crate::hook::{Decision, PassInfo, SkipPlan};
use crate::plugin::classifier::Classifier;
use crate::plugin::config::ClassifierParams;
use crate::plugin::crf::CrfState;
use crate::plugin::features::FeatureRow;
use crate::Engine;
use anyhow::{bail, Context, Result};

pub struct ClassifierPolicy {
    name: &'static str,
    classifier: Classifier,
    threshold: f64,
    /// The CRF's filter over this pass's layers so far.
    state: CrfState,
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
            .check_compatible(&engine.identity, features, label_tokens, params.any_task)
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
            state: None,
        }
    }
}

impl ExitPolicy for ClassifierPolicy {
    fn name(&self) -> &str {
        self.name
    }

    fn plan(&mut self, _info: &PassInfo) -> Result<SkipPlan> {
        self.state = None;
        Ok(SkipPlan::none())
    }

    fn decide(&mut self, row: &FeatureRow) -> Decision {
        if self.classifier.score_step(&mut self.state, &row.values) >= self.threshold {
            Decision::Exit
        } else {
            Decision::Continue
        }
    }
}
