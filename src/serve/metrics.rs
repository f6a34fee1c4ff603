//! Counters for `/metrics`, in the Prometheus text format.
//!
//! Per policy: requests, forward passes, the exit layer of each pass (a pass that ran to the end
//! counts as exiting at the last layer), layers run and layers saved (layers the model has minus
//! layers that ran, summed over passes). Policy labels come only from requests that ran, so
//! their number is bounded by the policies the server knows.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    /// (endpoint, HTTP status) → responses.
    responses: BTreeMap<(&'static str, u16), u64>,
    cancelled: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    policies: BTreeMap<String, PolicyCounters>,
}

#[derive(Default, Clone, Copy)]
struct PolicyCounters {
    requests: u64,
    passes: u64,
    exit_layer_sum: u64,
    layers_run: u64,
    layers_saved: u64,
}

/// One forward pass as the metrics see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PassRecord {
    /// Layer (from 1) whose output gave the logits: the exit layer, or the last layer.
    pub exit_layer: usize,
    pub layers_run: usize,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn response(&self, endpoint: &'static str, status: u16) {
        *self.lock().responses.entry((endpoint, status)).or_default() += 1;
    }

    pub fn cancelled(&self) {
        self.lock().cancelled += 1;
    }

    /// A request that ran to the end (or was cancelled after some tokens).
    pub fn generation(
        &self,
        policy: &str,
        num_layers: usize,
        prompt_tokens: usize,
        completion_tokens: usize,
        passes: &[PassRecord],
    ) {
        let mut c = self.lock();
        c.prompt_tokens += prompt_tokens as u64;
        c.completion_tokens += completion_tokens as u64;
        let p = c.policies.entry(policy.to_string()).or_default();
        p.requests += 1;
        for pass in passes {
            p.passes += 1;
            p.exit_layer_sum += pass.exit_layer as u64;
            p.layers_run += pass.layers_run as u64;
            p.layers_saved += num_layers.saturating_sub(pass.layers_run) as u64;
        }
    }

    /// The Prometheus text exposition, with the queue's current state.
    pub fn render(&self, queue_depth: usize, queue_capacity: usize) -> String {
        let c = self.lock();
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let per_policy = |f: &dyn Fn(&PolicyCounters) -> String| {
            c.policies
                .iter()
                .map(|(name, p)| (format!("{{policy=\"{name}\"}}"), f(p)))
                .collect::<Vec<_>>()
        };
        let responses = c
            .responses
            .iter()
            .map(|((endpoint, status), n)| {
                (
                    format!("{{endpoint=\"{endpoint}\",status=\"{status}\"}}"),
                    n.to_string(),
                )
            })
            .collect();
        family(
            "adainfer_http_responses_total",
            "counter",
            "HTTP responses by endpoint and status.",
            responses,
        );
        let plain = |v: u64| vec![(String::new(), v.to_string())];
        family(
            "adainfer_requests_cancelled_total",
            "counter",
            "Requests whose client went away before the answer was complete.",
            plain(c.cancelled),
        );
        family(
            "adainfer_prompt_tokens_total",
            "counter",
            "Prompt tokens of generations that ran.",
            plain(c.prompt_tokens),
        );
        family(
            "adainfer_completion_tokens_total",
            "counter",
            "Tokens of answers that completed.",
            plain(c.completion_tokens),
        );
        family(
            "adainfer_queue_depth",
            "gauge",
            "Requests waiting for the engine.",
            plain(queue_depth as u64),
        );
        family(
            "adainfer_queue_capacity",
            "gauge",
            "Requests the queue holds before answering 503.",
            plain(queue_capacity as u64),
        );
        family(
            "adainfer_requests_total",
            "counter",
            "Generations that ran, by exit policy.",
            per_policy(&|p| p.requests.to_string()),
        );
        family(
            "adainfer_forward_passes_total",
            "counter",
            "Forward passes, by exit policy.",
            per_policy(&|p| p.passes.to_string()),
        );
        family(
            "adainfer_layers_run_total",
            "counter",
            "Decoder layers that ran, summed over passes.",
            per_policy(&|p| p.layers_run.to_string()),
        );
        family(
            "adainfer_layers_saved_total",
            "counter",
            "Decoder layers skipped (model layers minus layers run), summed over passes.",
            per_policy(&|p| p.layers_saved.to_string()),
        );
        family(
            "adainfer_average_exit_layer",
            "gauge",
            "Mean layer (from 1) whose output gave the logits, over passes.",
            per_policy(&|p| {
                if p.passes == 0 {
                    "NaN".into()
                } else {
                    format!("{}", p.exit_layer_sum as f64 / p.passes as f64)
                }
            }),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.response("/v1/completions", 200);
        m.response("/v1/completions", 200);
        m.response("/v1/completions", 503);
        let pass = |exit_layer, layers_run| PassRecord {
            exit_layer,
            layers_run,
        };
        m.generation("gap_threshold", 12, 5, 2, &[pass(4, 4), pass(12, 12)]);
        m.generation("dense", 12, 3, 1, &[pass(12, 12)]);
        let text = m.render(1, 8);
        for line in [
            "adainfer_http_responses_total{endpoint=\"/v1/completions\",status=\"200\"} 2",
            "adainfer_http_responses_total{endpoint=\"/v1/completions\",status=\"503\"} 1",
            "adainfer_prompt_tokens_total 8",
            "adainfer_completion_tokens_total 3",
            "adainfer_queue_depth 1",
            "adainfer_layers_saved_total{policy=\"gap_threshold\"} 8",
            "adainfer_layers_saved_total{policy=\"dense\"} 0",
            "adainfer_average_exit_layer{policy=\"gap_threshold\"} 8",
            "adainfer_forward_passes_total{policy=\"gap_threshold\"} 2",
            "# TYPE adainfer_layers_saved_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
