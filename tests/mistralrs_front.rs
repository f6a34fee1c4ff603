//! The mistral.rs front: requests built exactly as a mistral.rs app builds them, answered by our
//! engine with the matching `Response` variants.
#![cfg(feature = "mistralrs")]

mod common;

use adainfer::engine::SamplingParams;
use adainfer::hook::{Decision, LayerHook, LayerView};
use adainfer::mistralrs::{AdaInferFront, FrontOptions};
use adainfer::serve::{AdaptiveOverride, EngineConfig, HookFactory};
use adainfer::{Engine, LoadOptions};
use either::Either;
use mistralrs_core::{
    DetokenizationRequest, Function, MessageContent, NormalRequest, Request, RequestMessage,
    Response, SamplingParams as MrsSampling, StopTokens, TokenizationRequest, Tool, ToolType,
};
use tokio::sync::mpsc::{channel, Receiver, Sender};

fn engine() -> Engine {
    Engine::load(&common::task_model(), &LoadOptions::default()).unwrap()
}

const PROMPT: &str = "Q: a gripping, funny film\nA:";

fn completion(text: &str, max: usize, streaming: bool, tx: Sender<Response>) -> NormalRequest {
    let mut sampling = MrsSampling::deterministic();
    sampling.max_len = Some(max);
    let mut r = NormalRequest::new_simple(
        RequestMessage::Completion {
            text: text.into(),
            echo_prompt: false,
            best_of: None,
        },
        sampling,
        tx,
        1,
        None,
        None,
    );
    r.is_streaming = streaming;
    r
}

fn send(sender: &Sender<Request>, r: NormalRequest) {
    sender.blocking_send(Request::Normal(Box::new(r))).unwrap();
}

fn reply(rx: &mut Receiver<Response>) -> Response {
    rx.blocking_recv().expect("the front answered")
}

fn validation_error(rx: &mut Receiver<Response>) -> String {
    match reply(rx) {
        Response::ValidationError(e) => e.to_string(),
        other => panic!(
            "expected a validation error, got {:?}",
            other.as_result().err()
        ),
    }
}

#[test]
fn completion_whole_and_streamed_match_the_dense_engine() {
    let reference = engine();
    let (_, expected) = reference
        .generate_text(PROMPT, 6, SamplingParams::greedy())
        .unwrap();
    let front = AdaInferFront::dense(engine()).unwrap();
    let sender = front.sender();

    let (tx, mut rx) = channel(64);
    send(&sender, completion(PROMPT, 6, false, tx));
    let done = match reply(&mut rx) {
        Response::CompletionDone(done) => done,
        _ => panic!("expected CompletionDone"),
    };
    assert_eq!(done.choices[0].text, expected);
    assert_eq!(done.object, "text_completion");
    assert!(done.usage.completion_tokens <= 6 && done.usage.completion_tokens > 0);
    assert_eq!(
        done.usage.prompt_tokens,
        reference.encode(PROMPT).unwrap().len()
    );

    let (tx, mut rx) = channel(64);
    send(&sender, completion(PROMPT, 6, true, tx));
    let mut streamed = String::new();
    loop {
        match reply(&mut rx) {
            Response::CompletionChunk(chunk) => {
                let choice = &chunk.choices[0];
                streamed.push_str(&choice.text);
                if let Some(reason) = &choice.finish_reason {
                    assert!(reason == "length" || reason == "stop", "{reason}");
                    break;
                }
            }
            _ => panic!("expected CompletionChunk"),
        }
    }
    assert_eq!(streamed, expected);
}

#[test]
fn chat_requests_get_chat_responses() {
    let front = AdaInferFront::dense(engine()).unwrap();
    let (tx, mut rx) = channel(64);
    let message = [
        ("role".to_string(), MessageContent::Left("user".into())),
        ("content".to_string(), MessageContent::Left(PROMPT.into())),
    ]
    .into_iter()
    .collect();
    let mut sampling = MrsSampling::deterministic();
    sampling.max_len = Some(3);
    let r = NormalRequest::new_simple(
        RequestMessage::Chat {
            messages: vec![message],
            enable_thinking: None,
            reasoning_effort: None,
        },
        sampling,
        tx,
        2,
        None,
        None,
    );
    send(&front.sender(), r);
    match reply(&mut rx) {
        Response::Done(done) => {
            assert_eq!(done.choices[0].message.role, "assistant");
            assert!(done.choices[0].message.content.is_some());
            assert_eq!(done.object, "chat.completion");
        }
        _ => panic!("expected Done"),
    }
}

#[test]
fn unsupported_and_invalid_requests_are_refused_by_name() {
    let front = AdaInferFront::dense(engine()).unwrap();
    let sender = front.sender();

    let (tx, mut rx) = channel(64);
    let mut r = completion(PROMPT, 4, false, tx);
    r.tools = Some(vec![Tool {
        tp: ToolType::Function,
        function: Function {
            description: Some("weather".into()),
            name: "get_weather".into(),
            parameters: None,
        },
    }]);
    send(&sender, r);
    assert!(validation_error(&mut rx).contains("tools"));

    let (tx, mut rx) = channel(64);
    send(&sender, completion(PROMPT, 1_000_000, false, tx));
    assert!(validation_error(&mut rx).contains("max_position_embeddings"));

    let (tx, mut rx) = channel(64);
    send(&sender, completion("", 4, false, tx));
    assert!(validation_error(&mut rx).contains("empty"));

    // Still serving after the refusals.
    let (tx, mut rx) = channel(64);
    send(&sender, completion(PROMPT, 2, false, tx));
    assert!(matches!(reply(&mut rx), Response::CompletionDone(_)));
}

#[test]
fn hostile_values_get_a_validation_error_and_the_front_keeps_serving() {
    let front = AdaInferFront::dense(engine()).unwrap();
    let sender = front.sender();
    let vocab = engine().tokenizer.get_vocab_size(true) as u32;
    let cases: Vec<(&str, Box<dyn Fn(&mut NormalRequest)>)> = vec![
        (
            "vocabulary",
            Box::new(move |r| r.messages = RequestMessage::CompletionTokens(vec![1, vocab + 7])),
        ),
        (
            "vocabulary",
            Box::new(|r| r.messages = RequestMessage::CompletionTokens(vec![u32::MAX])),
        ),
        (
            "empty",
            Box::new(|r| r.messages = RequestMessage::CompletionTokens(vec![])),
        ),
        (
            "temperature",
            Box::new(|r| r.sampling_params.temperature = Some(f64::NAN)),
        ),
        (
            "temperature",
            Box::new(|r| r.sampling_params.temperature = Some(-1.0)),
        ),
        ("top_p", Box::new(|r| r.sampling_params.top_p = Some(7.0))),
        (
            "n_choices",
            Box::new(|r| r.sampling_params.n_choices = 100_000),
        ),
        (
            "max_position_embeddings",
            Box::new(|r| r.sampling_params.max_len = Some(usize::MAX)),
        ),
        (
            "stop token id",
            Box::new(move |r| {
                r.sampling_params.stop_toks = Some(StopTokens::Ids(vec![vocab + 1; 10_000]))
            }),
        ),
        (
            "logits_bias",
            Box::new(|r| {
                r.sampling_params.logits_bias = Some((0..10_000u32).map(|i| (i, 100.0)).collect())
            }),
        ),
    ];
    for (named, mutate) in &cases {
        let (tx, mut rx) = channel(64);
        let mut r = completion(PROMPT, 2, false, tx);
        mutate(&mut r);
        send(&sender, r);
        let err = match reply(&mut rx) {
            Response::ValidationError(e) => e.to_string(),
            Response::CompletionModelError(e, _) => format!("model error: {e}"),
            other => panic!("{named}: answered with {:?}", other.as_result().is_ok()),
        };
        assert!(err.contains(named), "expected {named:?} in {err:?}");
    }
    let (tx, mut rx) = channel(64);
    send(&sender, completion(PROMPT, 2, false, tx));
    assert!(matches!(reply(&mut rx), Response::CompletionDone(_)));
}

/// Exits after block 3 on every pass, or panics when told to.
struct ExitAtThree {
    panic: bool,
}

impl LayerHook for ExitAtThree {
    fn name(&self) -> &str {
        "exit_at_3"
    }
    fn after_layer(&mut self, view: &mut LayerView<'_>) -> anyhow::Result<Decision> {
        assert!(!self.panic, "plugin bug");
        Ok(if view.number() == 3 {
            Decision::Exit
        } else {
            Decision::Continue
        })
    }
}

/// The hooks an embedding app supplies: here one fixed policy for every request.
struct ExitAtThreeHooks {
    panic: bool,
}

impl HookFactory for ExitAtThreeHooks {
    fn default_policy(&self) -> &str {
        "exit_at_3"
    }
    fn make(&self, _engine: &Engine, _policy: &str) -> anyhow::Result<Option<Box<dyn LayerHook>>> {
        Ok(Some(Box::new(ExitAtThree { panic: self.panic })))
    }
}

fn front_with_hook(panic: bool) -> AdaInferFront {
    let hooks = Box::new(ExitAtThreeHooks { panic });
    AdaInferFront::spawn(engine(), hooks, FrontOptions::default()).unwrap()
}

/// Layers saved for `policy` in the front's Prometheus metrics.
fn layers_saved(metrics: &str, policy: &str) -> f64 {
    let prefix = format!("adainfer_layers_saved_total{{policy=\"{policy}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The engine config's `[adaptive]` switch drives the front as it drives `adainfer serve`.
#[test]
fn the_engine_config_flag_turns_the_front_adaptive_or_dense() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("engine-configs/tiny-llama.toml");
    let mut config = EngineConfig::load(&path).unwrap();
    let adaptive = AdaInferFront::from_config(&config).unwrap();
    config.apply(AdaptiveOverride::Dense);
    let dense = AdaInferFront::from_config(&config).unwrap();
    for front in [&adaptive, &dense] {
        let (tx, mut rx) = channel(64);
        send(&front.sender(), completion(PROMPT, 3, false, tx));
        match reply(&mut rx) {
            Response::CompletionDone(done) => assert_eq!(done.usage.completion_tokens, 3),
            _ => panic!("expected CompletionDone"),
        }
    }
    // The gap rule stops this prompt's tokens before block 12 (SST-2 dev: 7.98 layers on average).
    let m = adaptive.metrics();
    assert!(layers_saved(&m, "gap_threshold") > 0.0, "{m}");
    let m = dense.metrics();
    assert!(m.contains("policy=\"dense\""), "{m}");
    assert_eq!(layers_saved(&m, "dense"), 0.0, "{m}");
}

#[test]
fn adaptive_front_generates_and_survives_a_panicking_plugin() {
    let front = front_with_hook(false);
    let (tx, mut rx) = channel(64);
    send(&front.sender(), completion(PROMPT, 5, false, tx));
    let tokens = match reply(&mut rx) {
        Response::CompletionDone(done) => done.usage.completion_tokens,
        _ => panic!("expected CompletionDone"),
    };
    assert!(tokens > 0);
    // Every token stopped after block 3 of 12.
    let m = front.metrics();
    assert_eq!(layers_saved(&m, "exit_at_3"), (9 * tokens) as f64, "{m}");

    let front = front_with_hook(true);
    let sender = front.sender();
    for _ in 0..2 {
        let (tx, mut rx) = channel(64);
        send(&sender, completion(PROMPT, 2, false, tx));
        match reply(&mut rx) {
            Response::InternalError(e) => assert!(e.to_string().contains("plugin bug"), "{e}"),
            _ => panic!("expected InternalError"),
        }
    }
}

fn done_text(rx: &mut Receiver<Response>) -> (String, String) {
    match reply(rx) {
        Response::CompletionDone(done) => (
            done.choices[0].text.clone(),
            done.choices[0].finish_reason.clone(),
        ),
        other => panic!("expected CompletionDone, got {:?}", other.as_result().err()),
    }
}

#[test]
fn token_prompts_stop_ids_echo_and_tokenization() {
    let reference = engine();
    let ids = reference.encode(PROMPT).unwrap();
    let (generation, text) = reference
        .generate_text(PROMPT, 4, SamplingParams::greedy())
        .unwrap();
    let tokens = generation.tokens;
    assert!(tokens.len() >= 2, "the model stops too soon for this test");
    let front = AdaInferFront::dense(engine()).unwrap();
    let sender = front.sender();

    // Token ids in, the same answer out.
    let (tx, mut rx) = channel(64);
    let mut r = completion(PROMPT, 4, false, tx);
    r.messages = RequestMessage::CompletionTokens(ids.clone());
    send(&sender, r);
    assert_eq!(done_text(&mut rx).0, text);

    // A stop id ends the answer before that token, with finish reason "stop".
    let (tx, mut rx) = channel(64);
    let mut r = completion(PROMPT, 4, false, tx);
    r.sampling_params.stop_toks = Some(StopTokens::Ids(vec![tokens[1]]));
    send(&sender, r);
    let (stopped, reason) = done_text(&mut rx);
    assert_eq!(reason, "stop");
    assert_eq!(stopped, reference.decode(&tokens[..1]).unwrap());

    // echo_prompt: the answer starts with the prompt.
    let (tx, mut rx) = channel(64);
    let mut r = completion(PROMPT, 4, false, tx);
    r.messages = RequestMessage::Completion {
        text: PROMPT.into(),
        echo_prompt: true,
        best_of: None,
    };
    send(&sender, r);
    assert_eq!(done_text(&mut rx).0, format!("{PROMPT}{text}"));

    // Tokenize / Detokenize round trip with the model's tokenizer.
    let (tx, mut rx) = channel(1);
    let tokenize = TokenizationRequest {
        text: Either::Right(PROMPT.into()),
        tools: None,
        add_generation_prompt: false,
        add_special_tokens: true,
        enable_thinking: None,
        reasoning_effort: None,
        response: tx,
    };
    sender.blocking_send(Request::Tokenize(tokenize)).unwrap();
    assert_eq!(rx.blocking_recv().unwrap().unwrap(), ids);
    let (tx, mut rx) = channel(1);
    let detokenize = DetokenizationRequest {
        tokens: tokens.clone(),
        skip_special_tokens: true,
        response: tx,
    };
    sender
        .blocking_send(Request::Detokenize(detokenize))
        .unwrap();
    assert_eq!(rx.blocking_recv().unwrap().unwrap(), text);

    // Ids outside the vocabulary are a validation error naming the id.
    let (tx, mut rx) = channel(64);
    let mut r = completion(PROMPT, 4, false, tx);
    r.messages = RequestMessage::CompletionTokens(vec![1, 999_999]);
    send(&sender, r);
    assert!(validation_error(&mut rx).contains("999999"));
}

#[test]
fn terminate_answers_the_requests_already_taken() {
    let front = AdaInferFront::dense(engine()).unwrap();
    let sender = front.sender();
    let mut receivers = Vec::new();
    for _ in 0..3 {
        let (tx, rx) = channel(64);
        send(&sender, completion(PROMPT, 3, false, tx));
        receivers.push(rx);
    }
    sender.blocking_send(Request::Terminate).unwrap();
    for mut rx in receivers {
        assert_eq!(done_text(&mut rx).1, "length");
    }
}
