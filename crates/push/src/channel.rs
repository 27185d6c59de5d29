//! Channel names. Only four shapes exist; anything else is refused before it reaches a hub, so a
//! client cannot create arbitrary channels (or Redis keys) by naming them.

use std::fmt;
use std::sync::Arc;

/// Longest id accepted inside a channel name.
const MAX_ID_LEN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// `event:{id}:seats` — seat status changes of one event; offsets owned by the store.
    EventSeats,
    /// `event:{id}:stream` — the live stream's status; offsets owned by the store.
    EventStream,
    /// `queue:{token}` — one waiting-room place.
    Queue,
    /// `user:{id}` — one user's notifications; private to that user.
    User,
}

/// A validated channel name, cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Channel(Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a channel: expected event:{{id}}:seats, event:{{id}}:stream, queue:{{token}} or user:{{id}}"
)]
pub struct ChannelError(pub String);

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

impl Channel {
    pub fn parse(raw: &str) -> Result<Channel, ChannelError> {
        let refused = || ChannelError(raw.chars().take(100).collect());
        let valid = if let Some(rest) = raw.strip_prefix("event:") {
            rest.strip_suffix(":seats")
                .or_else(|| rest.strip_suffix(":stream"))
                .is_some_and(valid_id)
        } else if let Some(id) = raw.strip_prefix("user:") {
            valid_id(id)
        } else if let Some(token) = raw.strip_prefix("queue:") {
            valid_id(token)
        } else {
            false
        };
        if valid {
            Ok(Channel(Arc::from(raw)))
        } else {
            Err(refused())
        }
    }

    pub fn event_seats(event_id: &str) -> Result<Channel, ChannelError> {
        Self::parse(&format!("event:{event_id}:seats"))
    }

    pub fn event_stream(event_id: &str) -> Result<Channel, ChannelError> {
        Self::parse(&format!("event:{event_id}:stream"))
    }

    pub fn user(user_id: &str) -> Result<Channel, ChannelError> {
        Self::parse(&format!("user:{user_id}"))
    }

    pub fn queue(token: &str) -> Result<Channel, ChannelError> {
        Self::parse(&format!("queue:{token}"))
    }

    pub fn kind(&self) -> ChannelKind {
        if self.0.starts_with("event:") && self.0.ends_with(":stream") {
            ChannelKind::EventStream
        } else if self.0.starts_with("event:") {
            ChannelKind::EventSeats
        } else if self.0.starts_with("user:") {
            ChannelKind::User
        } else {
            ChannelKind::Queue
        }
    }

    /// The id inside the name: the event id, the user id or the queue token.
    pub fn subject(&self) -> &str {
        let name: &str = &self.0;
        match self.kind() {
            ChannelKind::EventSeats => &name["event:".len()..name.len() - ":seats".len()],
            ChannelKind::EventStream => &name["event:".len()..name.len() - ":stream".len()],
            ChannelKind::User => &name["user:".len()..],
            ChannelKind::Queue => &name["queue:".len()..],
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_shapes_parse_and_nothing_else() {
        let stream = Channel::parse("event:01JX:stream").expect("stream");
        assert_eq!(stream.kind(), ChannelKind::EventStream);
        assert_eq!(stream.subject(), "01JX");
        let seats = Channel::parse("event:01JX:seats").expect("seats");
        assert_eq!(seats.kind(), ChannelKind::EventSeats);
        assert_eq!(seats.subject(), "01JX");
        assert_eq!(Channel::parse("user:abc").expect("user").subject(), "abc");
        assert_eq!(
            Channel::parse("queue:t-1_2").expect("queue").kind(),
            ChannelKind::Queue
        );
        for bad in [
            "",
            "event:",
            "event::seats",
            "event:x:holds",
            "event:x",
            "user:",
            "user:a b",
            "user:a:b",
            "queue:é",
            "other:x",
            "USER:x",
            &format!("user:{}", "a".repeat(65)),
        ] {
            assert!(Channel::parse(bad).is_err(), "{bad:?}");
        }
    }
}
