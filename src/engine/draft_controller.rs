//! What a round of token-draft speculation drafts (`auto`): from what this request has measured
//! — the seconds a verification pass of r rows costs, how often prompt-lookup drafts found by an
//! n-gram of each length were right, and, when a skip set is configured, what a skip-layer
//! draft pass costs and how often its drafts were right — each round takes whichever of a plain
//! step, j lookup drafts or k skip-layer drafts is expected to make the most tokens per second.
//! A source that keeps losing is only probed with one draft every [`PROBE_EVERY`] rounds, so a
//! request where no draft is right pays for the probes, not for every round.

/// Rounds with a source on offer but unused before auto tries one draft from it again.
pub const PROBE_EVERY: usize = 16;

/// Weight of a new observation in the running means.
const LEARN: f64 = 0.3;

/// Prior of every acceptance estimate: 1 kept in 2 tried.
const PRIOR: (f64, f64) = (1.0, 2.0);

/// Counts a round in which a source on offer was `used` or not; true once it has gone unused
/// for [`PROBE_EVERY`] rounds.
fn probe_due(idle: &mut usize, used: bool) -> bool {
    if used {
        *idle = 0;
        return false;
    }
    *idle += 1;
    *idle >= PROBE_EVERY
}

/// What one round drafts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundPlan {
    /// No drafts: a plain decode step.
    Plain,
    /// The first j tokens of the prompt-lookup draft.
    Lookup(usize),
    /// Up to k skip-layer drafts.
    Skip(usize),
}

/// Where a recorded round's drafts came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Drafted {
    /// Prompt lookup, by an n-gram of this length (0 when nothing was drafted).
    Lookup { ngram: usize },
    /// Skip-layer passes, this many seconds each.
    Skip { seconds_per_draft: f64 },
}

/// Running (kept, tried) counts, decayed.
#[derive(Debug, Clone, Copy)]
struct Hits(f64, f64);

impl Hits {
    fn rate(self) -> f64 {
        self.0 / self.1
    }
    /// Drafts are tried in order until the first rejection.
    fn record(&mut self, drafted: usize, kept: usize) {
        let tried = kept + usize::from(kept < drafted);
        self.0 = self.0 * (1.0 - LEARN) + kept as f64;
        self.1 = self.1 * (1.0 - LEARN) + tried as f64;
    }
}

/// Skip-layer drafts' record in a request.
#[derive(Debug, Clone)]
struct SkipRecord {
    hits: Hits,
    /// Running mean seconds of one draft pass; unmeasured = as dear as a full step.
    seconds: Option<f64>,
    idle: usize,
}

/// Per-round choice: everything offered (`lookup`, `skip_layers`), or what maximises expected
/// tokens per second from this request's measurements (`auto`).
#[derive(Debug, Clone)]
pub struct DraftController {
    auto: bool,
    /// Running mean seconds of a pass of `r` rows, at index `r` (measured in this request).
    cost: Vec<Option<f64>>,
    /// Per n-gram length, lookup drafts kept / tried.
    hits: Vec<Hits>,
    /// Rounds since auto last verified a lookup draft it was offered.
    idle: usize,
    /// `Some` when auto may also draft with blocks left out.
    skip: Option<SkipRecord>,
}

impl DraftController {
    pub fn new(auto: bool, max_tokens: usize, max_ngram: usize) -> Self {
        Self {
            auto,
            cost: vec![None; max_tokens + 2],
            hits: vec![Hits(PRIOR.0, PRIOR.1); max_ngram + 1],
            idle: 0,
            skip: None,
        }
    }

    /// Let auto weigh skip-layer drafts too.
    pub fn with_skip_drafts(mut self) -> Self {
        self.skip = Some(SkipRecord {
            hits: Hits(PRIOR.0, PRIOR.1),
            seconds: None,
            idle: 0,
        });
        self
    }

    /// Chance that a draft found by an `ngram`-token match is kept, given the one before was.
    pub fn acceptance(&self, ngram: usize) -> f64 {
        self.hits[ngram.min(self.hits.len() - 1)].rate()
    }

    /// The same for a skip-layer draft, if auto weighs them.
    pub fn skip_acceptance(&self) -> Option<f64> {
        self.skip.as_ref().map(|s| s.hits.rate())
    }

    /// Seconds a pass of `rows` rows is expected to take: measured, else one row's time grown
    /// by a third per extra row (the quantized kernels' cost on the 2-core box).
    fn cost_of(&self, rows: usize) -> Option<f64> {
        let one = self.cost[1]?;
        Some(self.cost[rows].unwrap_or(one * (1.0 + (rows - 1) as f64 / 3.0)))
    }

    /// (drafts, expected tokens per second) of the best round of 1..=`most` drafts, each kept
    /// with chance `a` given the one before was, each costing `per_draft` seconds to make.
    fn best_round(&self, most: usize, a: f64, per_draft: f64) -> Option<(usize, f64)> {
        let mut best: Option<(usize, f64)> = None;
        let mut expected = 1.0; // tokens a round settles: 1 + a + a² + … + aʲ
        for j in 1..=most.min(self.cost.len() - 2) {
            expected += a.powi(j as i32);
            let rate = expected / (j as f64 * per_draft + self.cost_of(j + 1)?);
            if best.is_none_or(|b| rate > b.1) {
                best = Some((j, rate));
            }
        }
        best
    }

    /// This round's drafting, given a lookup draft of `offered` tokens (found by an
    /// `ngram`-token match) and room for `skip_budget` skip-layer drafts (weighed only after
    /// [`Self::with_skip_drafts`]). Without auto: the whole lookup draft.
    pub fn plan(&mut self, offered: usize, ngram: usize, skip_budget: usize) -> RoundPlan {
        if !self.auto {
            return match offered {
                0 => RoundPlan::Plain,
                j => RoundPlan::Lookup(j),
            };
        }
        // The first step of a request is plain: it measures what drafting must beat.
        let Some(plain) = self.cost_of(1) else {
            return RoundPlan::Plain;
        };
        let mut best = (RoundPlan::Plain, 1.0 / plain);
        if offered > 0 {
            if let Some((j, rate)) = self.best_round(offered, self.acceptance(ngram), 0.0) {
                if rate > best.1 {
                    best = (RoundPlan::Lookup(j), rate);
                }
            }
        }
        if let Some(s) = self.skip.as_ref().filter(|_| skip_budget > 0) {
            let per_draft = s.seconds.unwrap_or(plain);
            if let Some((k, rate)) = self.best_round(skip_budget, s.hits.rate(), per_draft) {
                if rate > best.1 {
                    best = (RoundPlan::Skip(k), rate);
                }
            }
        }
        // A source on offer but unused this round moves towards a one-draft probe, taken on a
        // round that would otherwise be plain.
        let mut plan = best.0;
        let used = matches!(plan, RoundPlan::Lookup(_));
        if offered > 0 && probe_due(&mut self.idle, used) && plan == RoundPlan::Plain {
            self.idle = 0;
            plan = RoundPlan::Lookup(1);
        }
        if let Some(s) = self.skip.as_mut().filter(|_| skip_budget > 0) {
            let used = matches!(plan, RoundPlan::Skip(_));
            if probe_due(&mut s.idle, used) && plan == RoundPlan::Plain {
                s.idle = 0;
                plan = RoundPlan::Skip(1);
            }
        }
        plan
    }

    /// What a round's verification pass of `rows` rows cost and how many of its `drafted`
    /// drafts were kept.
    pub fn record(&mut self, rows: usize, seconds: f64, drafted: usize, kept: usize, how: Drafted) {
        if let Some(slot) = self.cost.get_mut(rows) {
            *slot = Some(match *slot {
                Some(old) => old + LEARN * (seconds - old),
                None => seconds,
            });
        }
        if drafted == 0 {
            return;
        }
        match how {
            Drafted::Lookup { ngram } => {
                let last = self.hits.len() - 1;
                self.hits[ngram.min(last)].record(drafted, kept);
            }
            Drafted::Skip { seconds_per_draft } => {
                if let Some(s) = self.skip.as_mut() {
                    s.hits.record(drafted, kept);
                    s.seconds = Some(match s.seconds {
                        Some(old) => old + LEARN * (seconds_per_draft - old),
                        None => seconds_per_draft,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(c: &mut DraftController, offered: usize, ngram: usize) -> usize {
        match c.plan(offered, ngram, 0) {
            RoundPlan::Lookup(j) => j,
            RoundPlan::Plain => 0,
            RoundPlan::Skip(k) => panic!("skip drafts without a skip set ({k})"),
        }
    }

    #[test]
    fn auto_measures_a_plain_step_first_then_drafts_what_pays() {
        let mut c = DraftController::new(true, 8, 3);
        assert_eq!(c.plan(5, 3, 0), RoundPlan::Plain, "no step measured yet");
        c.record(1, 0.010, 0, 0, Drafted::Lookup { ngram: 0 });
        // Prior 1 in 2 and a third of a step per extra row: a draft or two pays.
        let first = lookup(&mut c, 8, 3);
        assert!((1..=3).contains(&first), "{first}");
        // Drafts that are always right and rows that cost little: draft everything offered.
        for _ in 0..20 {
            c.record(9, 0.012, 8, 8, Drafted::Lookup { ngram: 3 });
        }
        assert!(c.acceptance(3) > 0.95);
        assert_eq!(lookup(&mut c, 8, 3), 8);
        // Without auto, all that is offered.
        assert_eq!(
            DraftController::new(false, 8, 3).plan(6, 1, 4),
            RoundPlan::Lookup(6)
        );
        assert_eq!(
            DraftController::new(false, 8, 3).plan(0, 0, 4),
            RoundPlan::Plain
        );
    }

    #[test]
    fn auto_stops_drafting_what_keeps_failing_and_probes_now_and_then() {
        let mut c = DraftController::new(true, 8, 3);
        c.record(1, 0.010, 0, 0, Drafted::Lookup { ngram: 0 });
        for _ in 0..30 {
            let j = lookup(&mut c, 4, 1);
            c.record(
                j + 1,
                0.010 * (1.0 + j as f64 / 3.0),
                j,
                0,
                Drafted::Lookup { ngram: 1 },
            );
        }
        assert!(c.acceptance(1) < 0.2, "{}", c.acceptance(1));
        let drafted: usize = (0..64).map(|_| lookup(&mut c, 4, 1)).sum();
        assert_eq!(
            drafted,
            64 / PROBE_EVERY,
            "one single-draft probe per {PROBE_EVERY} rounds"
        );
        // A 3-gram's record is its own: still the prior.
        assert!(lookup(&mut c, 4, 3) > 0);
    }

    #[test]
    fn auto_turns_to_skip_drafts_where_they_pay_and_only_probes_them_where_they_lose() {
        let step = 0.010;
        let verify = |rows: usize| step * (1.0 + (rows - 1) as f64 / 5.0);
        let run = |seconds_per_draft: f64, right: bool| {
            let mut c = DraftController::new(true, 6, 3).with_skip_drafts();
            c.record(1, step, 0, 0, Drafted::Lookup { ngram: 0 });
            let mut plans = Vec::new();
            for _ in 0..48 {
                // Nothing to look up: skip drafts or a plain step.
                let plan = c.plan(0, 0, 6);
                let (rows, drafted) = match plan {
                    RoundPlan::Skip(k) => (k + 1, k),
                    RoundPlan::Plain => (1, 0),
                    RoundPlan::Lookup(j) => panic!("lookup offered nothing, got {j}"),
                };
                let kept = if right { drafted } else { 0 };
                let how = Drafted::Skip { seconds_per_draft };
                c.record(rows, verify(rows), drafted, kept, how);
                plans.push(plan);
            }
            (c, plans)
        };
        // Cheap drafts that are always right: after the first probe, every round drafts.
        let (c, plans) = run(0.2 * step, true);
        assert!(c.skip_acceptance().unwrap() > 0.95);
        let skipping = plans
            .iter()
            .filter(|p| matches!(p, RoundPlan::Skip(_)))
            .count();
        assert!(skipping >= 48 - PROBE_EVERY, "{plans:?}");
        assert!(
            matches!(plans[47], RoundPlan::Skip(k) if k > 1),
            "{plans:?}"
        );
        // Drafts as dear as a step that are never right: one probe per PROBE_EVERY rounds.
        let (_, plans) = run(step, false);
        let probes = plans.iter().filter(|p| **p == RoundPlan::Skip(1)).count();
        assert_eq!(probes, 48 / PROBE_EVERY, "{plans:?}");
        assert!(plans
            .iter()
            .all(|p| matches!(p, RoundPlan::Plain | RoundPlan::Skip(1))));
        // Right lookup drafts that cost nothing to make beat skip drafts that cost a step.
        let mut c = DraftController::new(true, 6, 3).with_skip_drafts();
        c.record(1, step, 0, 0, Drafted::Lookup { ngram: 0 });
        c.record(
            2,
            verify(2),
            1,
            1,
            Drafted::Skip {
                seconds_per_draft: step,
            },
        );
        assert!(matches!(c.plan(4, 3, 6), RoundPlan::Lookup(_)));
    }
}
