//! Room membership: which connections are in which room, both ways.
//!
//! A plain data structure owned by the hub thread; it knows nothing of sockets.
//! A room exists while it has a member.

use std::collections::{HashMap, HashSet};

use crate::types::ConnId;

/// Longest room name, in bytes.
pub(crate) const MAX_ROOM_LEN: usize = 128;

/// Whether `name` is a valid room name: 1 to [`MAX_ROOM_LEN`] bytes of UTF-8
/// without control characters. The one place this rule is checked; its text
/// for errors is `crate::error::invalid_room_text`.
pub fn is_valid_room(name: &str) -> bool {
    (1..=MAX_ROOM_LEN).contains(&name.len()) && !name.chars().any(char::is_control)
}

/// Rooms and their members.
#[derive(Debug, Default)]
pub(crate) struct Rooms {
    members: HashMap<String, Vec<ConnId>>,
    rooms_of: HashMap<ConnId, HashSet<String>>,
    /// Rooms whose names no application can give (not [`is_valid_room`]):
    /// the protocol's own, such as its event streams' rooms. Not counted.
    internal: usize,
}

impl Rooms {
    /// Adds `conn` to `room`; false when it was already a member.
    pub(crate) fn join(&mut self, conn: ConnId, room: &str) -> bool {
        if !self.rooms_of.entry(conn).or_default().insert(room.to_owned()) {
            return false;
        }
        let list = self.members.entry(room.to_owned()).or_default();
        if list.is_empty() && !is_valid_room(room) {
            self.internal += 1;
        }
        list.push(conn);
        true
    }

    /// Removes `conn` from `room`; false when it was not a member.
    pub(crate) fn leave(&mut self, conn: ConnId, room: &str) -> bool {
        let Some(rooms) = self.rooms_of.get_mut(&conn) else { return false };
        if !rooms.remove(room) {
            return false;
        }
        if rooms.is_empty() {
            self.rooms_of.remove(&conn);
        }
        self.remove_member(room, conn);
        true
    }

    /// Removes `conn` from every room it is in.
    pub(crate) fn leave_all(&mut self, conn: ConnId) {
        for room in self.rooms_of.remove(&conn).unwrap_or_default() {
            self.remove_member(&room, conn);
        }
    }

    fn remove_member(&mut self, room: &str, conn: ConnId) {
        if let Some(list) = self.members.get_mut(room) {
            if let Some(i) = list.iter().position(|&c| c == conn) {
                list.swap_remove(i);
            }
            if list.is_empty() {
                self.members.remove(room);
                if !is_valid_room(room) {
                    self.internal -= 1;
                }
            }
        }
    }

    /// The members of `room` (empty when it does not exist).
    pub(crate) fn members(&self, room: &str) -> &[ConnId] {
        self.members.get(room).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The rooms `conn` is in, sorted (not the internal ones).
    pub(crate) fn rooms_of(&self, conn: ConnId) -> Vec<String> {
        let mut rooms: Vec<String> = self
            .rooms_of
            .get(&conn)
            .map(|r| r.iter().filter(|room| is_valid_room(room)).cloned().collect())
            .unwrap_or_default();
        rooms.sort();
        rooms
    }

    /// How many rooms exist (not counting internal ones).
    pub(crate) fn count(&self) -> usize {
        self.members.len() - self.internal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_both_ways_and_rooms_vanish_when_empty() {
        let mut r = Rooms::default();
        assert!(r.join(1, "a") && r.join(2, "a") && r.join(1, "b"));
        assert!(!r.join(1, "a"));
        assert_eq!(r.members("a").len(), 2);
        assert_eq!(r.rooms_of(1), vec!["a", "b"]);
        assert_eq!(r.count(), 2);
        assert!(r.leave(2, "a") && !r.leave(2, "a"));
        r.leave_all(1);
        assert_eq!(r.count(), 0);
        assert!(r.rooms_of(1).is_empty() && r.members("a").is_empty());
    }

    #[test]
    fn internal_rooms_are_not_listed_or_counted() {
        let mut r = Rooms::default();
        assert!(r.join(1, "a") && r.join(1, "\u{1}presence\u{1}a"));
        assert_eq!(r.rooms_of(1), vec!["a"]);
        assert_eq!(r.count(), 1);
        assert_eq!(r.members("\u{1}presence\u{1}a"), &[1]);
    }

    #[test]
    fn room_names() {
        assert!(crate::error::invalid_room_text!().contains(&format!("1 to {MAX_ROOM_LEN} bytes")));
        assert!(is_valid_room("lobby") && is_valid_room(&"é".repeat(64)));
        assert!(!is_valid_room("") && !is_valid_room(&"x".repeat(129)) && !is_valid_room("a\nb"));
    }
}
