//! The error type of the server's Rust API ([`Server`](crate::Server),
//! [`ServerHandle`](crate::ServerHandle)). The client (`wshub::client`) has
//! its own, `client::Error`, for what a connecting client meets.

use std::fmt;
use std::io;

// The texts of the errors that both the Rust API and the C API report: one
// source each (the C messages add a NUL with `concat!`).
macro_rules! invalid_room_text {
    () => {
        "room names are 1 to 128 bytes of UTF-8 without control characters"
    };
}
macro_rules! invalid_close_code_text {
    () => {
        "close code not allowed on the wire (use 1000-1003, 1007-1014 or 3000-4999), \
         or reason longer than 123 bytes"
    };
}
macro_rules! stopped_text {
    () => {
        "the server is stopped"
    };
}
macro_rules! no_such_connection_text {
    () => {
        "no open connection has this id"
    };
}
pub(crate) use {invalid_close_code_text, invalid_room_text, no_such_connection_text, stopped_text};

/// What went wrong, and what the caller can do about it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The configuration was refused before anything started; the text names the field.
    InvalidConfig(String),
    /// Binding the listening socket or spawning a server thread failed.
    Io(io::Error),
    /// The server was stopped (or is stopping); start a new one.
    Stopped,
    /// No open connection has this id: it closed, or it never existed.
    NoSuchConnection,
    /// A room name must be 1 to 128 bytes of UTF-8 without control characters.
    InvalidRoom,
    /// A close code that may not be sent on the wire (RFC 6455 section 7.4), or a
    /// reason longer than 123 bytes.
    InvalidCloseCode,
    /// The wire protocol refused a backend call (a publish or a ban); the
    /// text says why: data that is not JSON, the room table or the ban list
    /// full.
    Refused(String),
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig(why) => write!(f, "invalid configuration: {why}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Stopped => f.write_str(stopped_text!()),
            Error::NoSuchConnection => f.write_str(no_such_connection_text!()),
            Error::InvalidRoom => f.write_str(invalid_room_text!()),
            Error::InvalidCloseCode => f.write_str(invalid_close_code_text!()),
            Error::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}
