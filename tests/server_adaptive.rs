//! The server with AdaInfer on (the shipped engine config): answers equal the library's adaptive
//! generation, the exit layers are reported, a request can ask for dense or for lossless
//! self-speculative decoding, and `/metrics` counts the layers saved.

use adainfer::engine::kv_fill::KvFill;
use adainfer::engine::modes::{generate_mode, ModeSpec};
use adainfer::engine::{GenerationParams, SamplingParams};
use adainfer::plugin::{AdaInfer, PluginConfig};
use serde_json::json;
use server_common::*;

mod server_common;

const MAX_TOKENS: usize = 4;

/// What the library answers `prompt` with `policy`'s hook in `spec`'s mode: text and depths.
fn library_answer(
    engine: &adainfer::Engine,
    plugin: &PluginConfig,
    policy: &str,
    spec: &ModeSpec,
    params: &GenerationParams,
    prompt: &str,
) -> (String, Vec<usize>) {
    let ids = engine.encode(prompt).unwrap();
    let mut hook = AdaInfer::for_policy(plugin, engine, policy).unwrap();
    let g = generate_mode(
        &engine.model,
        &ids,
        params,
        spec,
        Some(&mut hook),
        |_, _| Ok(()),
    )
    .unwrap();
    (engine.decode(&g.generation.tokens).unwrap(), g.depths)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_answers_match_the_library_and_metrics_show_layers_saved() {
    let config = engine_config();
    let plugin_path = config
        .plugin()
        .expect("the shipped config turns AdaInfer on")
        .to_path_buf();
    let server = start(&config).await;
    let client = client();
    let engine = config.load_engine().unwrap();
    let plugin = PluginConfig::load(&plugin_path, &[]).unwrap();
    let spec = config.adaptive.mode_spec();
    let params = GenerationParams {
        max_tokens: MAX_TOKENS,
        sampling: SamplingParams::greedy(),
        stop_tokens: engine.eos_token_ids.clone(),
    };
    let mut saved_in_responses = 0;
    for sentence in sst2_sentences(12) {
        let prompt = format!("Q: {sentence}\nA:");
        // Default policy (the plugin config's gap_threshold), as the library runs it.
        let ids = engine.encode(&prompt).unwrap();
        let mut hook = AdaInfer::from_config(&plugin, &engine).unwrap();
        let expected = generate_mode(
            &engine.model,
            &ids,
            &params,
            &spec,
            Some(&mut hook),
            |_, _| Ok(()),
        )
        .unwrap();
        let body = json!({"prompt": prompt, "max_tokens": MAX_TOKENS});
        let (status, v) = post(&client, &server, "/v1/completions", &body).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            v["choices"][0]["text"],
            engine.decode(&expected.generation.tokens).unwrap()
        );
        let a = &v["adainfer"];
        assert_eq!(a["policy"], plugin.policy.kind.as_str(), "{v}");
        assert_eq!(a["mode"], spec.label());
        assert_eq!(a["exit_layers"], json!(expected.depths), "{prompt}");
        saved_in_responses += a["layers_saved"].as_u64().unwrap();
        // The same prompt, dense by request: exactly the dense engine.
        let dense = engine
            .generate_text(&prompt, MAX_TOKENS, SamplingParams::greedy())
            .unwrap();
        let body =
            json!({"prompt": prompt, "max_tokens": MAX_TOKENS, "adainfer": {"policy": "dense"}});
        let (status, v) = post(&client, &server, "/v1/completions", &body).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["choices"][0]["text"], dense.1);
        assert_eq!(v["adainfer"]["policy"], "dense");
        assert!(
            v["adainfer"]["exit_layers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l == 12),
            "{v}"
        );
        // Lossless self-speculative decoding by request, streamed: the dense text again.
        let body = json!({"prompt": prompt, "max_tokens": MAX_TOKENS, "stream": true,
                          "adainfer": {"mode": "self_speculative"}});
        let url = format!("http://{}/v1/completions", server.addr);
        let (status, text) = send(&client, request("POST", &url, body.to_string())).await;
        assert_eq!(status, 200, "{text}");
        let (streamed_text, last) = streamed(&text, false);
        assert_eq!(streamed_text, dense.1, "{prompt}");
        assert_eq!(last["adainfer"]["mode"], "self_speculative/k=4", "{last}");
    }
    assert!(
        saved_in_responses > 0,
        "gap_threshold saved no layer on 12 SST-2 prompts"
    );
    let (_, metrics) = get(&client, &server, "/metrics").await;
    let label = format!(
        "{{policy=\"{}\",mode=\"{}\"}}",
        plugin.policy.kind,
        spec.label()
    );
    assert_metric(&metrics, &format!("adainfer_requests_total{label} 12"));
    assert_metric(
        &metrics,
        &format!("adainfer_layers_saved_total{label} {saved_in_responses}"),
    );
    let average = metric_value(&metrics, &format!("adainfer_average_exit_layer{label}")).unwrap();
    assert!(average > 0.0 && average < 12.0, "{metrics}");
    assert_metric(
        &metrics,
        "adainfer_layers_saved_total{policy=\"dense\",mode=\"dense\"} 0",
    );
    // A static policy (skips planned before the pass) needs the propagate KV fill: without it the
    // request is refused with a hint, with it the answer equals the library's.
    let prompt = "Q: a gripping , funny and moving film .\nA:";
    let body = json!({"prompt": prompt, "max_tokens": 2, "adainfer": {"policy": "unified_skip"}});
    let (status, v) = post(&client, &server, "/v1/completions", &body).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("propagate"),
        "{v}"
    );
    let body = json!({"prompt": prompt, "max_tokens": 2,
                      "adainfer": {"policy": "unified_skip", "kv_fill": "propagate"}});
    let (status, v) = post(&client, &server, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    let spec = ModeSpec {
        kv_fill: KvFill::Propagate,
        ..spec
    };
    let params = GenerationParams {
        max_tokens: 2,
        ..params
    };
    let (text, depths) = library_answer(&engine, &plugin, "unified_skip", &spec, &params, prompt);
    assert_eq!(v["choices"][0]["text"], text);
    assert_eq!(v["adainfer"]["exit_layers"], json!(depths));
    // A policy the plugin does not know is a 400 that lists the ones it does.
    let body = json!({"prompt": "Q: x\nA:", "adainfer": {"policy": "deep_thought"}});
    let (status, v) = post(&client, &server, "/v1/completions", &body).await;
    assert_eq!(status, 400, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("deep_thought") && message.contains("gap_threshold"),
        "{message}"
    );
    assert_eq!(v["error"]["param"], "adainfer.policy");
    server.stop().await.unwrap();
}

/// Static-policy requests sent together share batch steps, and each still gets exactly the
/// answer the library gives it alone (early exit with the propagate fill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_static_policy_requests_are_batched_and_match_the_library() {
    let config = engine_config();
    let server = start(&config).await;
    let client = client();
    let engine = config.load_engine().unwrap();
    let plugin = PluginConfig::load(config.plugin().unwrap(), &[]).unwrap();
    let spec = ModeSpec {
        kv_fill: KvFill::Propagate,
        ..config.adaptive.mode_spec()
    };
    let params = GenerationParams {
        max_tokens: MAX_TOKENS,
        sampling: SamplingParams::greedy(),
        stop_tokens: engine.eos_token_ids.clone(),
    };
    let sentences = sst2_sentences(16);
    let tasks: Vec<_> = sentences
        .iter()
        .map(|sentence| {
            let body = json!({"prompt": format!("Q: {sentence}\nA:"), "max_tokens": MAX_TOKENS,
                              "adainfer": {"policy": "unified_skip", "kv_fill": "propagate"}});
            let (client, url) = (
                client.clone(),
                format!("http://{}/v1/completions", server.addr),
            );
            tokio::spawn(
                async move { send(&client, request("POST", &url, body.to_string())).await },
            )
        })
        .collect();
    for (sentence, task) in sentences.iter().zip(tasks) {
        let (status, text) = task.await.unwrap();
        assert_eq!(status, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let prompt = format!("Q: {sentence}\nA:");
        let (text, depths) =
            library_answer(&engine, &plugin, "unified_skip", &spec, &params, &prompt);
        assert_eq!(v["choices"][0]["text"], text, "{sentence}");
        assert_eq!(v["adainfer"]["exit_layers"], json!(depths), "{v}");
        assert_eq!(v["adainfer"]["mode"], "early_exit/propagate");
    }
    let (_, metrics) = get(&client, &server, "/metrics").await;
    let batched = metric_value(&metrics, "adainfer_batched_requests_total").unwrap_or(0.0);
    assert!(batched >= 2.0, "no batch ran:\n{metrics}");
    server.stop().await.unwrap();
}
