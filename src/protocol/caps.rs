//! Rights (docs/protocol.md, "Namespaces and rights"): what a connection may
//! do in a room — `join`, `publish`, `presence`, `history` — from its token's
//! `caps` claim, its `rooms` claim, or the backend's answer (`proxy.rs`).
//!
//! The handler asks [`Rights`] before each act; this module owns what the
//! claims mean and how they are read, never the acts themselves.

use serde::Deserialize;

/// One right, as a `caps` entry's `allow` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Right {
    /// Become a member (`room:join`, `/sse`).
    Join,
    /// Publish (text or binary) and send typing events.
    Publish,
    /// Read the member list (`presence:get`).
    Presence,
    /// Be replayed what was missed (`since`).
    History,
}

impl Right {
    const fn bit(self) -> u8 {
        match self {
            Right::Join => 1,
            Right::Publish => 2,
            Right::Presence => 4,
            Right::History => 8,
        }
    }
}

/// A set of rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Rights(u8);

impl Rights {
    /// Every right: no claim, or a `rooms` claim naming the room.
    pub const ALL: Rights = Rights(15);
    /// No right.
    pub const NONE: Rights = Rights(0);

    /// The rights `allow` lists.
    pub fn of(allow: &[Right]) -> Rights {
        Rights(allow.iter().fold(0, |bits, r| bits | r.bit()))
    }

    pub fn has(self, right: Right) -> bool {
        self.0 & right.bit() != 0
    }

    /// These rights without `right` (a member the join hook made read-only).
    pub fn without(self, right: Right) -> Rights {
        Rights(self.0 & !right.bit())
    }

    fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }
}

/// Room names as a claim lists them: exact names, and prefixes written with
/// a trailing `*`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub(crate) struct RoomPatterns(Vec<String>);

impl RoomPatterns {
    pub fn new(patterns: Vec<String>) -> Self {
        RoomPatterns(patterns)
    }

    /// Whether a pattern names `room` or a prefix of it (`chat:*` matches `chat:1`).
    pub fn matches(&self, room: &str) -> bool {
        self.0.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => p == room,
        })
    }
}

/// One `caps` entry: these rights in these rooms.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cap {
    rooms: RoomPatterns,
    allow: Vec<Right>,
}

/// A `caps` claim: the rights in a room are those of every entry naming it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub(crate) struct Caps(Vec<Cap>);

impl Caps {
    /// The rights these caps give in `room` (none when no entry names it).
    pub fn rights(&self, room: &str) -> Rights {
        self.0
            .iter()
            .filter(|c| c.rooms.matches(room))
            .fold(Rights::NONE, |all, c| all.union(Rights::of(&c.allow)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_and_prefixes() {
        let p = RoomPatterns::new(vec!["lobby".into(), "chat:*".into()]);
        assert!(p.matches("lobby") && p.matches("chat:1") && p.matches("chat:"));
        assert!(!p.matches("lobby2") && !p.matches("chat") && !p.matches("other"));
    }

    #[test]
    fn rights_of_every_matching_entry_add_up() {
        let caps: Caps = serde_json::from_str(
            r#"[{"rooms":["a:*"],"allow":["join"]},{"rooms":["a:1"],"allow":["publish","history"]}]"#,
        )
        .unwrap();
        let a1 = caps.rights("a:1");
        assert!(a1.has(Right::Join) && a1.has(Right::Publish) && a1.has(Right::History));
        assert!(!a1.has(Right::Presence));
        assert_eq!(caps.rights("a:2"), Rights::of(&[Right::Join]));
        assert_eq!(caps.rights("b"), Rights::NONE);
        assert!(!Rights::ALL.without(Right::Publish).has(Right::Publish));
    }

    #[test]
    fn unknown_rights_and_shapes_are_refused() {
        for bad in [
            r#"[{"rooms":["a"],"allow":["fly"]}]"#,
            r#"[{"rooms":"a","allow":[]}]"#,
            r#"[{"allow":[]}]"#,
            "null",
            r#""all""#,
        ] {
            assert!(serde_json::from_str::<Caps>(bad).is_err(), "{bad}");
        }
    }
}
