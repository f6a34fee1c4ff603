//! What the model reads: chat messages, a completion prompt (text or token ids), stop strings.

use super::error::ApiError;
use super::openai::{ChatMessage, Input, PromptText};

pub fn check_messages(messages: Vec<ChatMessage>) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request("`messages` is empty").with_param("messages"));
    }
    if let Some(m) = messages
        .iter()
        .find(|m| !matches!(m.role.as_str(), "system" | "user" | "assistant"))
    {
        return Err(ApiError::bad_request(format!(
            "message role {:?} is not supported (system, user or assistant)",
            m.role
        ))
        .with_param("messages"));
    }
    Ok(messages)
}

pub fn check_stop(stop: Option<PromptText>) -> Result<Vec<String>, ApiError> {
    let list = match stop {
        None => Vec::new(),
        Some(PromptText::One(s)) => vec![s],
        Some(PromptText::List(list)) => list,
        Some(PromptText::Tokens(_) | PromptText::TokenLists(_)) => {
            return Err(ApiError::bad_request("`stop` takes strings").with_param("stop"))
        }
    };
    if list.len() > 4 || list.iter().any(String::is_empty) {
        return Err(
            ApiError::bad_request("`stop` takes up to 4 non-empty strings").with_param("stop"),
        );
    }
    Ok(list)
}

pub fn check_prompt(prompt: PromptText) -> Result<Input, ApiError> {
    let several = |n: usize| {
        ApiError::bad_request(format!("`prompt` lists {n} prompts; send one per request"))
            .with_param("prompt")
    };
    let input = match prompt {
        PromptText::One(text) => Input::Prompt(text),
        PromptText::List(mut list) if list.len() == 1 => Input::Prompt(list.remove(0)),
        PromptText::List(list) => return Err(several(list.len())),
        PromptText::Tokens(ids) => Input::Tokens(ids),
        PromptText::TokenLists(mut lists) if lists.len() == 1 => Input::Tokens(lists.remove(0)),
        PromptText::TokenLists(lists) => return Err(several(lists.len())),
    };
    let empty = match &input {
        Input::Prompt(text) => text.is_empty(),
        Input::Tokens(ids) => ids.is_empty(),
        Input::Messages(_) => false,
    };
    if empty {
        return Err(ApiError::bad_request("`prompt` is empty").with_param("prompt"));
    }
    Ok(input)
}
