//! TOY — a test-only family: a baton one holder takes for a while. It exists to prove what
//! `engine/mod.rs` promises a newcomer: a family is this folder (a pure `Primitive`, a command
//! table), its line in `lib.rs`'s `FAMILIES` and its variant in `engine/family.rs` — the engine
//! does expiry, FIFO waiting, fencing, replication, persistence, notifications and INFO.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smallvec::smallvec;

use crate::engine::{
    command, txn, Arg, Args, CmdResult, Command, CommandDef, Ctx, Effect, Effects, Event, Family,
    Primitive, RStr, Reply,
};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toy {
    /// Holder, deadline, token.
    held: Option<(Arc<[u8]>, u64, u64)>,
    last_token: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToyEffect {
    Take {
        holder: Arc<[u8]>,
        deadline: u64,
        token: u64,
    },
    Lapse,
}

impl Effect for ToyEffect {
    fn event(&self) -> Event {
        match self {
            ToyEffect::Take { .. } => Event::Grant,
            ToyEffect::Lapse => Event::Lapse,
        }
    }
}

pub struct Take {
    holder: Arc<[u8]>,
    ttl: u64,
}

impl Primitive for Toy {
    const FAMILY: Family = Family::Toy;
    const TYPE_NAME: &'static str = "CorralToy";
    const ENCODING_VERSION: i32 = 1;
    type Effect = ToyEffect;
    type Request = Take;

    fn apply(&mut self, effect: &ToyEffect) -> Result<(), &'static str> {
        match effect {
            ToyEffect::Take {
                holder,
                deadline,
                token,
            } => {
                self.held = Some((holder.clone(), *deadline, *token));
                self.last_token = self.last_token.max(*token);
            }
            ToyEffect::Lapse => {
                self.held.take().ok_or("nothing to lapse")?;
            }
        }
        Ok(())
    }

    /// Only "is it free?": who waits in line is the engine's business.
    fn grant(&self, take: &Take, now: u64, token: u64) -> Option<(Effects<ToyEffect>, Reply)> {
        if self.held.is_some() {
            return None;
        }
        let e = ToyEffect::Take {
            holder: take.holder.clone(),
            deadline: now + take.ttl,
            token,
        };
        Some((smallvec![e], Reply::Int(token as i64)))
    }

    fn lapse(&self, now: u64, out: &mut Vec<ToyEffect>) {
        if self.held.as_ref().is_some_and(|h| h.1 <= now) {
            out.push(ToyEffect::Lapse);
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        self.held.as_ref().map(|h| h.1)
    }

    fn expires_at(&self) -> Option<u64> {
        self.next_deadline()
    }

    fn is_empty(&self) -> bool {
        self.held.is_none()
    }

    fn last_token(&self) -> u64 {
        self.last_token
    }

    fn rebuild(&self) -> Vec<ToyEffect> {
        let held = self.held.iter();
        held.map(|(holder, deadline, token)| ToyEffect::Take {
            holder: holder.clone(),
            deadline: *deadline,
            token: *token,
        })
        .collect()
    }

    fn mem_usage(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.0.len())
    }
}

/// `TOY.TAKE key holder ms [BLOCK timeout]`
pub struct TakeCmd;

impl Command for TakeCmd {
    const NAME: &'static str = "TOY.TAKE";
    const FLAGS: &'static str = "write deny-oom blocking";
    const SUMMARY: &'static str = "Takes the baton for ms milliseconds: a fencing token, or nil";
    const COMPLEXITY: &'static str = "O(1)";
    const ARGS: &'static [Arg] = &[
        Arg::Str("holder"),
        Arg::Int("ms"),
        Arg::OptInt("BLOCK", "timeout"),
    ];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let take = Take {
            holder: a.id("holder")?.into(),
            ttl: a.ttl()?,
        };
        let block = match a.option(&["BLOCK"])? {
            Some(_) => Some(a.block_ms()?),
            None => None,
        };
        a.finish()?;
        txn::acquire::<Toy>(ctx, key, take, block)
    }
}

pub const COMMANDS: &[CommandDef] = &[command::<TakeCmd>()];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{check_families, codec, decide};

    fn take(holder: &str) -> Take {
        Take {
            holder: Arc::from(holder.as_bytes()),
            ttl: 100,
        }
    }

    #[test]
    fn registered_through_the_one_table() {
        // FAMILIES (lib.rs) holds the toy in test builds, and passes the check `init` runs
        // before registering anything; without its line, loading would be refused.
        check_families(crate::FAMILIES).unwrap();
        assert_eq!(crate::FAMILIES.len(), Family::COUNT);
        let without: Vec<_> = crate::FAMILIES
            .iter()
            .filter(|f| f.family != Family::Toy)
            .map(|f| crate::engine::family::<Toy>(f.commands))
            .collect();
        assert!(check_families(&without).is_err());
        assert_eq!(COMMANDS[0].arity(), -4, "arity from the argument table");
        assert_eq!(
            Event::Grant
                .notification(Family::Toy)
                .and_then(|n| n.to_str().ok()),
            Some("toy.grant")
        );
    }

    #[test]
    fn the_engine_keeps_it_fair_and_replicable() {
        let mut t = Toy::default();
        // Free, but someone waits in line: the engine refuses before the toy is asked.
        assert!(decide(&t, &take("late"), 0, true, 1).is_none());
        let (effects, reply) = decide(&t, &take("a"), 0, false, 7).unwrap();
        assert_eq!(reply, Reply::Int(7));
        // What replicas and the AOF receive decodes back to the same effects, for this family.
        let payload = codec::encode_effects(Family::Toy, &effects);
        let (family, rest) = codec::split_effects(&payload).unwrap();
        assert_eq!(family, Family::Toy);
        let decoded: Vec<ToyEffect> = codec::decode(rest).unwrap();
        for e in &decoded {
            t.apply(e).unwrap();
        }
        assert!(decide(&t, &take("b"), 50, false, 8).is_none(), "held");
        let mut due = Vec::new();
        t.lapse(100, &mut due);
        assert_eq!(due, vec![ToyEffect::Lapse]);
        // The fuzz targets decode every family, this one included: mode 48 = an RDB value
        // (48 % 3 == 0) of family 48 / 9 = 5 at encoding version 48 / 3 % 3 = 1.
        assert_eq!(Family::Toy.index(), 5);
        let mut input = vec![48];
        input.extend(codec::encode(&t));
        crate::fuzz::decode(&input);
    }
}
