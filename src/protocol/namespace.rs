//! Namespaces (docs/protocol.md, "Namespaces and rights"): rooms grouped by
//! a name prefix, each group with its own rules — whether clients may
//! publish, how much history it keeps, whether it has presence, join/leave
//! events and typing, how many members it takes.
//!
//! This module owns the rules and how a room's name resolves to them
//! ([`Namespaces::rules`], the one lookup every call site uses); the call
//! sites in `handler.rs` and `room.rs` only ask the resolved [`Rules`].

use std::sync::Arc;
use std::time::Duration;

use super::envelope::{ErrorCode, ErrorReply};

/// One `[[namespace]]` block: the rules of every room whose name starts
/// with `prefix` (the longest matching prefix wins). History settings left
/// `None` take the top-level ones.
///
/// ```
/// use wshub::protocol::{Namespace, ProtocolConfig};
/// let config = ProtocolConfig::default()
///     .namespace(Namespace::new("feed:").client_publish(false))
///     .namespace(Namespace::new("stage:").join_leave(false).max_members(10_000));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Namespace {
    /// Rooms whose name starts with this belong to the namespace.
    pub prefix: String,
    /// Whether clients may publish (`false`: only the backend API and
    /// server-side publishes may; clients get `error forbidden`).
    pub client_publish: bool,
    /// Messages each room keeps for recovery (0: no history).
    pub history_size: Option<usize>,
    /// How long each room keeps a message (zero: no history).
    pub history_ttl: Option<Duration>,
    /// Bytes of history each room keeps (0: no history).
    pub history_max_bytes: Option<usize>,
    /// Whether rooms have a member list (`false`: `presence:get` is
    /// `forbidden`, and no `presence:join`/`leave` is sent).
    pub presence: bool,
    /// Whether members get `presence:join`/`leave` events.
    pub join_leave: bool,
    /// Whether `typing:start`/`typing:stop` are allowed.
    pub typing: bool,
    /// Members a room takes; a join past it gets `error forbidden`. 0 = no limit.
    pub max_members: usize,
}

impl Namespace {
    /// A namespace for rooms starting with `prefix`, with the rules of a room
    /// outside any namespace until set otherwise.
    pub fn new(prefix: impl Into<String>) -> Self {
        Namespace {
            prefix: prefix.into(),
            client_publish: true,
            history_size: None,
            history_ttl: None,
            history_max_bytes: None,
            presence: true,
            join_leave: true,
            typing: true,
            max_members: 0,
        }
    }

    /// Sets [`Namespace::client_publish`].
    #[must_use]
    pub fn client_publish(mut self, on: bool) -> Self {
        self.client_publish = on;
        self
    }

    /// Sets [`Namespace::history_size`].
    #[must_use]
    pub fn history_size(mut self, messages: usize) -> Self {
        self.history_size = Some(messages);
        self
    }

    /// Sets [`Namespace::history_ttl`].
    #[must_use]
    pub fn history_ttl(mut self, ttl: Duration) -> Self {
        self.history_ttl = Some(ttl);
        self
    }

    /// Sets [`Namespace::history_max_bytes`].
    #[must_use]
    pub fn history_max_bytes(mut self, bytes: usize) -> Self {
        self.history_max_bytes = Some(bytes);
        self
    }

    /// Sets [`Namespace::presence`].
    #[must_use]
    pub fn presence(mut self, on: bool) -> Self {
        self.presence = on;
        self
    }

    /// Sets [`Namespace::join_leave`].
    #[must_use]
    pub fn join_leave(mut self, on: bool) -> Self {
        self.join_leave = on;
        self
    }

    /// Sets [`Namespace::typing`].
    #[must_use]
    pub fn typing(mut self, on: bool) -> Self {
        self.typing = on;
        self
    }

    /// Sets [`Namespace::max_members`].
    #[must_use]
    pub fn max_members(mut self, members: usize) -> Self {
        self.max_members = members;
        self
    }

    /// The problem with this block, if any (for [`ProtocolConfig::validate`]).
    pub(crate) fn check(&self) -> Result<(), String> {
        use crate::config::bounds;
        if self.prefix.is_empty() || self.prefix.len() > 128 || self.prefix.chars().any(char::is_control) {
            return Err(format!(
                "namespace prefix {:?} must be 1-128 bytes without control characters",
                self.prefix
            ));
        }
        let named = |key: &str| format!("namespace {:?}: {key}", self.prefix);
        bounds::check(&[
            (&named("history_size"), self.history_size.unwrap_or(0), bounds::SLOTS),
            (&named("history_max_bytes"), self.history_max_bytes.unwrap_or(0), bounds::BUDGET),
            (&named("max_members"), self.max_members, bounds::CONNECTIONS),
        ])?;
        bounds::check_durations(&[(&named("history_ttl"), self.history_ttl.unwrap_or_default())])
    }
}

/// How much history one room keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HistoryRules {
    /// Messages.
    pub count: usize,
    /// Age of the oldest message.
    pub ttl: Duration,
    /// Bytes (frames plus a fixed overhead each).
    pub bytes: usize,
}

impl HistoryRules {
    /// Whether the room keeps any history at all (every bound above zero).
    pub fn keeps(&self) -> bool {
        self.count > 0 && !self.ttl.is_zero() && self.bytes > 0
    }
}

/// The rules one room follows, resolved from its name once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rules {
    /// The namespace's prefix; empty for rooms outside every namespace.
    pub prefix: String,
    pub client_publish: bool,
    pub history: HistoryRules,
    pub presence: bool,
    join_leave: bool,
    pub typing: bool,
    /// 0 = no limit.
    pub max_members: usize,
}

impl Rules {
    /// Whether members get `presence:join`/`leave` events.
    pub fn announces_members(&self) -> bool {
        self.presence && self.join_leave
    }

    /// Refuses a client publish where only the backend may publish.
    pub fn check_client_publish(&self, room: &str) -> Result<(), ErrorReply> {
        if self.client_publish {
            return Ok(());
        }
        Err(ErrorReply::new(ErrorCode::Forbidden, format!("clients may not publish to {room:?}")))
    }

    /// Refuses `presence:get` where rooms have no member list.
    pub fn check_presence(&self, room: &str) -> Result<(), ErrorReply> {
        if self.presence {
            return Ok(());
        }
        Err(ErrorReply::new(ErrorCode::Forbidden, format!("{room:?} has no presence")))
    }

    /// Refuses typing events where they are off.
    pub fn check_typing(&self, room: &str) -> Result<(), ErrorReply> {
        if self.typing {
            return Ok(());
        }
        Err(ErrorReply::new(ErrorCode::Forbidden, format!("{room:?} has no typing events")))
    }

    /// Refuses a join that would make the room hold more than `max_members`.
    pub fn check_members(&self, room: &str, members_now: usize) -> Result<(), ErrorReply> {
        if self.max_members == 0 || members_now < self.max_members {
            return Ok(());
        }
        Err(ErrorReply::new(ErrorCode::Forbidden, format!("{room:?} is full ({} members)", self.max_members)))
    }
}

/// Every namespace's rules, longest prefix first, and the top-level rules.
#[derive(Debug)]
pub(crate) struct Namespaces {
    top: Arc<Rules>,
    by_prefix: Vec<Arc<Rules>>,
}

impl Namespaces {
    /// The rules of `namespaces`, and `history` for rooms no prefix matches
    /// (history settings a namespace leaves unset take those too).
    /// `ProtocolConfig::namespace_rules` gives a configuration's.
    pub fn new(history: HistoryRules, namespaces: &[Namespace]) -> Self {
        let top = Arc::new(Rules {
            prefix: String::new(),
            client_publish: true,
            history,
            presence: true,
            join_leave: true,
            typing: true,
            max_members: 0,
        });
        let mut by_prefix: Vec<Arc<Rules>> = namespaces
            .iter()
            .map(|n| {
                Arc::new(Rules {
                    prefix: n.prefix.clone(),
                    client_publish: n.client_publish,
                    history: HistoryRules {
                        count: n.history_size.unwrap_or(history.count),
                        ttl: n.history_ttl.unwrap_or(history.ttl),
                        bytes: n.history_max_bytes.unwrap_or(history.bytes),
                    },
                    presence: n.presence,
                    join_leave: n.join_leave,
                    typing: n.typing,
                    max_members: n.max_members,
                })
            })
            .collect();
        // Longest first; a later block with the same prefix replaces an earlier one.
        by_prefix.reverse();
        by_prefix.sort_by(|a, b| b.prefix.len().cmp(&a.prefix.len()).then_with(|| a.prefix.cmp(&b.prefix)));
        by_prefix.dedup_by(|later, earlier| later.prefix == earlier.prefix);
        Namespaces { top, by_prefix }
    }

    /// The rules of `room`: its longest matching namespace's, else the top-level ones.
    pub fn rules(&self, room: &str) -> &Arc<Rules> {
        self.by_prefix.iter().find(|r| room.starts_with(r.prefix.as_str())).unwrap_or(&self.top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProtocolConfig;

    #[test]
    fn the_longest_prefix_wins_and_unmatched_rooms_take_the_top_level() {
        let config = ProtocolConfig::default()
            .history_size(7)
            .namespace(Namespace::new("feed:").client_publish(false))
            .namespace(Namespace::new("feed:open:"))
            .namespace(Namespace::new("quiet:").history_size(0).presence(false));
        let ns = config.namespace_rules();
        assert!(!ns.rules("feed:1").client_publish);
        assert!(ns.rules("feed:open:1").client_publish);
        assert_eq!(ns.rules("feed:open:1").prefix, "feed:open:");
        assert_eq!(ns.rules("chat").prefix, "");
        assert_eq!(ns.rules("feed:1").history.count, 7, "unset history settings are the top level's");
        assert!(!ns.rules("quiet:x").history.keeps());
        assert!(!ns.rules("quiet:x").announces_members());
        assert!(ns.rules("chat").announces_members());
    }

    #[test]
    fn a_later_block_with_the_same_prefix_replaces_the_earlier() {
        let config = ProtocolConfig::default()
            .namespace(Namespace::new("a:").typing(false))
            .namespace(Namespace::new("a:").max_members(3));
        let ns = config.namespace_rules();
        assert!(ns.rules("a:1").typing);
        assert_eq!(ns.rules("a:1").max_members, 3);
    }

    #[test]
    fn max_members_refuses_only_past_the_limit() {
        let ns = ProtocolConfig::default().namespace(Namespace::new("s:").max_members(2)).namespace_rules();
        assert!(ns.rules("s:1").check_members("s:1", 1).is_ok());
        assert!(ns.rules("s:1").check_members("s:1", 2).is_err());
        assert!(ns.rules("other").check_members("other", 1_000_000).is_ok());
    }
}
