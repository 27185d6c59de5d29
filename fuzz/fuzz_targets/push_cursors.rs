//! Why this exists: push channel names, `Last-Event-ID` cursors and the messages built from them
//! come straight from clients (query strings, headers, WebSocket frames). Parsing must never
//! panic; a name that parses must round-trip and name a subject; and a message built on any
//! parsed channel with any type and offset must serialise to JSON that reads back the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use marquee_push::{Channel, PushMessage};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = marquee_api::routes::push::parse_cursor(&text);
    let (name, kind) = text.split_once('\n').unwrap_or((&text, "note"));
    if let Ok(channel) = Channel::parse(name) {
        assert_eq!(Channel::parse(channel.as_str()).as_ref(), Ok(&channel));
        assert!(!channel.subject().is_empty());
        let offset = data.len() as u64 * 7919;
        let message = PushMessage::new(
            channel.clone(),
            offset,
            kind,
            &serde_json::json!({"text": kind}),
        );
        let parsed: serde_json::Value =
            serde_json::from_slice(&message.json).expect("a message is JSON");
        assert_eq!(parsed["channel"], channel.as_str());
        assert_eq!(parsed["offset"], offset);
        assert_eq!(parsed["type"], kind);
        assert_eq!(parsed["data"]["text"], kind);
    }
});
