//! Prompt-lookup drafts: the tokens that followed the last n-gram where it occurred before in
//! the context (prompt and generated text), as llama.cpp's lookup decoding and transformers'
//! `prompt_lookup_num_tokens` draft. Free to make, and right where the answer copies its
//! context: extractive answers, quotes, edits of a given text.

/// A draft and the length of the n-gram it was found by (longer matches are right more often).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NgramDraft<'a> {
    pub tokens: &'a [u32],
    pub ngram: usize,
}

/// Up to `k` tokens that followed the most recent earlier occurrence of the longest suffix of
/// `history` (from `max_ngram` tokens down to 1) that occurred before; `None` when no suffix
/// recurs. The most recent occurrence wins: it is the likeliest to continue the same way.
pub fn propose(history: &[u32], max_ngram: usize, k: usize) -> Option<NgramDraft<'_>> {
    if k == 0 {
        return None;
    }
    let len = history.len();
    for n in (1..=max_ngram.min(len.saturating_sub(1))).rev() {
        let suffix = &history[len - n..];
        // Occurrences ending before the suffix itself, latest first.
        let found = (0..len - n)
            .rev()
            .find(|&start| &history[start..start + n] == suffix);
        if let Some(start) = found {
            let from = start + n;
            let to = (from + k).min(len);
            return Some(NgramDraft {
                tokens: &history[from..to],
                ngram: n,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_recurring_suffix_drafts_what_followed_it() {
        // "1 2 3 4 5 … 1 2 3" → 4 5 (the 3-gram "1 2 3" occurred at the start).
        let h = [1, 2, 3, 4, 5, 9, 2, 3, 7, 1, 2, 3];
        let d = propose(&h, 3, 2).unwrap();
        assert_eq!((d.tokens, d.ngram), (&[4, 5][..], 3));
        // Only "2 3" recurs when the 3-gram is new: its latest earlier occurrence is followed by 7.
        let h = [1, 2, 3, 4, 9, 2, 3, 7, 8, 2, 3];
        let d = propose(&h, 3, 3).unwrap();
        assert_eq!((d.tokens, d.ngram), (&[7, 8, 2][..], 2));
    }

    #[test]
    fn drafts_stop_at_the_end_of_the_history_and_at_k() {
        let h = [5, 6, 5];
        let d = propose(&h, 3, 8).unwrap();
        assert_eq!((d.tokens, d.ngram), (&[6, 5][..], 1));
        assert_eq!(propose(&[1, 2, 3, 1], 3, 1).unwrap().tokens, &[2]);
    }

    #[test]
    fn nothing_recurs_nothing_is_drafted() {
        assert_eq!(propose(&[1, 2, 3, 4], 3, 4), None);
        assert_eq!(propose(&[], 3, 4), None);
        assert_eq!(propose(&[7], 3, 4), None);
        assert_eq!(propose(&[7, 7], 3, 0), None);
        assert_eq!(propose(&[7, 7], 0, 4), None);
    }
}
