//! Counters for `/metrics`, in the Prometheus text format.
//!
//! Per policy and mode: requests, generated tokens, the depth of each token (the layer whose
//! output chose it: the exit layer, or the last layer for a full pass), and layers saved (layers
//! the model has minus that depth, summed over tokens; a static policy's up-front skips are not
//! counted). Labels come only from
//! requests that ran, so their number is bounded by the policies and modes the server knows.

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
    /// Batches of dense requests decoded together, and the requests in them.
    batches: u64,
    batched_requests: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    /// (policy, mode) → counters.
    policies: BTreeMap<(String, String), PolicyCounters>,
}

#[derive(Default, Clone, Copy)]
struct PolicyCounters {
    requests: u64,
    tokens: u64,
    exit_layer_sum: u64,
    layers_saved: u64,
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

    /// `size` requests were decoded together.
    pub fn batch(&self, size: usize) {
        let mut c = self.lock();
        c.batches += 1;
        c.batched_requests += size as u64;
    }

    /// A request that ran to the end; `depths` holds one entry per generated token.
    pub fn generation(
        &self,
        policy: &str,
        mode: &str,
        num_layers: usize,
        prompt_tokens: usize,
        depths: &[usize],
    ) {
        let mut c = self.lock();
        c.prompt_tokens += prompt_tokens as u64;
        c.completion_tokens += depths.len() as u64;
        let key = (policy.to_string(), mode.to_string());
        let p = c.policies.entry(key).or_default();
        p.requests += 1;
        for &depth in depths {
            p.tokens += 1;
            p.exit_layer_sum += depth as u64;
            p.layers_saved += num_layers.saturating_sub(depth) as u64;
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
                .map(|((policy, mode), p)| {
                    (format!("{{policy=\"{policy}\",mode=\"{mode}\"}}"), f(p))
                })
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
            "adainfer_batches_total",
            "counter",
            "Batches of dense requests decoded together (two or more requests each).",
            plain(c.batches),
        );
        family(
            "adainfer_batched_requests_total",
            "counter",
            "Requests answered as part of a batch.",
            plain(c.batched_requests),
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
            "Generations that ran, by exit policy and mode.",
            per_policy(&|p| p.requests.to_string()),
        );
        family(
            "adainfer_generated_tokens_total",
            "counter",
            "Tokens generated, by exit policy and mode.",
            per_policy(&|p| p.tokens.to_string()),
        );
        family(
            "adainfer_exit_layers_total",
            "counter",
            "Exit layer (from 1) of the pass that chose each token, summed over tokens.",
            per_policy(&|p| p.exit_layer_sum.to_string()),
        );
        family(
            "adainfer_layers_saved_total",
            "counter",
            "Model layers minus each token's exit layer, summed over tokens.",
            per_policy(&|p| p.layers_saved.to_string()),
        );
        family(
            "adainfer_average_exit_layer",
            "gauge",
            "Mean layer (from 1) whose output chose a token: the exit layer, or the last one.",
            per_policy(&|p| {
                if p.tokens == 0 {
                    "NaN".into()
                } else {
                    format!("{}", p.exit_layer_sum as f64 / p.tokens as f64)
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
        m.generation("gap_threshold", "early_exit/recompute", 12, 5, &[4, 12]);
        m.generation("dense", "dense", 12, 3, &[12]);
        let text = m.render(1, 8);
        for line in [
            "adainfer_http_responses_total{endpoint=\"/v1/completions\",status=\"200\"} 2",
            "adainfer_http_responses_total{endpoint=\"/v1/completions\",status=\"503\"} 1",
            "adainfer_prompt_tokens_total 8",
            "adainfer_completion_tokens_total 3",
            "adainfer_queue_depth 1",
            "adainfer_layers_saved_total{policy=\"gap_threshold\",mode=\"early_exit/recompute\"} 8",
            "adainfer_layers_saved_total{policy=\"dense\",mode=\"dense\"} 0",
            "adainfer_average_exit_layer{policy=\"gap_threshold\",mode=\"early_exit/recompute\"} 8",
            "adainfer_generated_tokens_total{policy=\"gap_threshold\",mode=\"early_exit/recompute\"} 2",
            "# TYPE adainfer_layers_saved_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
