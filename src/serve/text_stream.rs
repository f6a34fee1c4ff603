//! Tokens → text for one answer: sends each new piece as soon as it is settled, never half a
//! UTF-8 character, and never text that might turn out to be the start of a stop string.

use super::worker::Event;
use crate::Engine;
use anyhow::Result;
use tokio::sync::mpsc;

/// The client went away: stop generating.
#[derive(Debug)]
pub struct Cancelled;

/// A stop string appeared: the answer is complete.
#[derive(Debug)]
pub struct StopHit;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client went away")
    }
}

impl std::fmt::Display for StopHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a stop string was generated")
    }
}

impl std::error::Error for Cancelled {}
impl std::error::Error for StopHit {}

pub struct TextStream<'a> {
    engine: &'a Engine,
    events: &'a mpsc::UnboundedSender<Event>,
    stops: &'a [String],
    pub tokens: Vec<u32>,
    /// The depth of each token, as the generator reported it.
    pub depths: Vec<usize>,
    /// Text already sent.
    sent: String,
    /// The answer cut before a stop string, once one appeared.
    stopped: Option<String>,
}

impl<'a> TextStream<'a> {
    pub fn new(
        engine: &'a Engine,
        events: &'a mpsc::UnboundedSender<Event>,
        stops: &'a [String],
    ) -> Self {
        Self {
            engine,
            events,
            stops,
            tokens: Vec::new(),
            depths: Vec::new(),
            sent: String::new(),
            stopped: None,
        }
    }

    /// Take one token; fails with [`Cancelled`] or [`StopHit`] to end the generation.
    pub fn push(&mut self, token: u32, depth: usize) -> Result<()> {
        if self.events.is_closed() {
            return Err(Cancelled.into());
        }
        self.tokens.push(token);
        self.depths.push(depth);
        let text = self.engine.decode(&self.tokens)?;
        if let Some(cut) = first_stop(&text, self.stops) {
            let answer = text[..cut].to_string();
            self.send_up_to(&answer)?;
            self.stopped = Some(answer);
            return Err(StopHit.into());
        }
        // A byte-level token may end inside a character (decoded as U+FFFD): wait for the rest.
        if !text.ends_with('\u{FFFD}') {
            let settled = text.len() - held_back(&text, self.stops);
            self.send_up_to(&text[..settled])?;
        }
        Ok(())
    }

    /// The whole answer (as the library decodes it, cut at a stop string), after sending
    /// whatever is still unsent.
    pub fn finish(&mut self) -> Result<String> {
        let text = match &self.stopped {
            Some(answer) => answer.clone(),
            None => self.engine.decode(&self.tokens)?,
        };
        self.send_up_to(&text)?;
        Ok(text)
    }

    fn send_up_to(&mut self, text: &str) -> Result<()> {
        if text.len() > self.sent.len() && text.starts_with(&self.sent) {
            let delta = text[self.sent.len()..].to_string();
            self.sent = text.to_string();
            self.events
                .send(Event::Text(delta))
                .map_err(|_| Cancelled)?;
        }
        Ok(())
    }
}

/// Where the earliest stop string starts in `text`.
pub fn first_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops.iter().filter_map(|s| text.find(s.as_str())).min()
}

/// Bytes at the end of `text` to keep back: the longest tail that begins some stop string.
pub fn held_back(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .flat_map(|s| {
            s.char_indices()
                .skip(1)
                .map(|(i, _)| &s[..i])
                .filter(|prefix| text.ends_with(prefix))
                .map(str::len)
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn stop_strings_cut_at_the_earliest() {
        let s = stops(&["\n\n", "Q:"]);
        assert_eq!(first_stop(" negative\n\nQ:", &s), Some(9));
        assert_eq!(first_stop(" negative Q: x\n\n", &s), Some(10));
        assert_eq!(first_stop(" negative", &s), None);
        assert_eq!(first_stop("anything", &[]), None);
    }

    #[test]
    fn a_possible_stop_start_is_held_back() {
        let s = stops(&["\n\n", "The end"]);
        assert_eq!(held_back(" negative\n", &s), 1);
        assert_eq!(held_back(" so The e", &s), 5);
        assert_eq!(held_back(" negative", &s), 0);
        // Multi-byte characters: only whole-character prefixes count.
        let s = stops(&["éé"]);
        assert_eq!(held_back("café", &s), 'é'.len_utf8());
        assert_eq!(held_back("cafe", &s), 0);
    }
}
