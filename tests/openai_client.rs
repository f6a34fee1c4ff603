//! The official `openai` Python client against the server, unchanged: chat with logprobs, a
//! streamed chat with `include_usage`, completions with echo and prompt scoring, a refused
//! field surfacing as the client's `BadRequestError`. Needs python3 with the `openai` package
//! (or `ADAINFER_OPENAI_PYTHON` naming an interpreter that has it); without one the test says
//! why and passes, as in CI, where no package download is guaranteed.

use adainfer::serve::AdaptiveOverride;
use serde_json::Value;
use server_common::*;
use std::process::Command;

mod server_common;

const SCRIPT: &str = r#"
import json, sys, openai
client = openai.OpenAI(base_url=sys.argv[1], api_key="none")
out = {}
prompt = "Q: a gripping , funny and moving film .\nA:"
chat = client.chat.completions.create(model="default", max_tokens=3, logprobs=True,
    top_logprobs=2, messages=[{"role": "user", "content": prompt}])
out["chat_text"] = chat.choices[0].message.content
out["chat_logprobs"] = [t.logprob for t in chat.choices[0].logprobs.content]
out["chat_usage"] = chat.usage.model_dump()
chunks = list(client.chat.completions.create(model="default", max_tokens=3, stream=True,
    stream_options={"include_usage": True}, messages=[{"role": "user", "content": prompt}]))
out["stream_text"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
out["stream_usage"] = chunks[-1].usage.model_dump()
scored = client.completions.create(model="tiny-llama-sst2-agnews", prompt=prompt,
    max_tokens=0, echo=True, logprobs=1)
out["echo_text"] = scored.choices[0].text
out["echo_logprobs"] = scored.choices[0].logprobs.token_logprobs
out["echo_usage"] = scored.usage.model_dump()
try:
    client.chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}],
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    out["tools"] = "accepted"
except openai.BadRequestError as e:
    out["tools"] = e.body.get("param") if isinstance(e.body, dict) else str(e.body)
print(json.dumps(out))
"#;

fn python_with_openai() -> Result<String, String> {
    let python = std::env::var("ADAINFER_OPENAI_PYTHON").unwrap_or_else(|_| "python3".into());
    match Command::new(&python).args(["-c", "import openai"]).output() {
        Ok(out) if out.status.success() => Ok(python),
        Ok(_) => Err(format!(
            "{python} has no `openai` package (pip install openai)"
        )),
        Err(e) => Err(format!("no {python}: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_works_unchanged() {
    let python = match python_with_openai() {
        Ok(p) => p,
        Err(why) => {
            println!("skipping the openai-client test: {why}");
            return;
        }
    };
    let mut config = engine_config();
    config.apply(AdaptiveOverride::Dense);
    let server = start(&config).await;
    let base = format!("http://{}/v1", server.addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(["-c", SCRIPT, &base])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the client failed:\n{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stream_text"], v["chat_text"], "{v}");
    assert_eq!(v["stream_usage"], v["chat_usage"], "{v}");
    let chat_lp = v["chat_logprobs"].as_array().unwrap();
    assert_eq!(
        chat_lp.len() as u64,
        v["chat_usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert!(chat_lp.iter().all(|l| l.as_f64().unwrap() <= 0.0), "{v}");
    assert!(v["echo_text"]
        .as_str()
        .unwrap()
        .starts_with("Q: a gripping"));
    let echo_lp = v["echo_logprobs"].as_array().unwrap();
    assert_eq!(
        echo_lp.len() as u64,
        v["echo_usage"]["prompt_tokens"].as_u64().unwrap()
    );
    assert!(echo_lp[0].is_null() && echo_lp[1..].iter().all(|l| l.as_f64().unwrap() <= 0.0));
    assert_eq!(v["echo_usage"]["completion_tokens"], 0);
    assert_eq!(v["tools"], "tools", "{v}");
    server.stop().await.unwrap();
}
