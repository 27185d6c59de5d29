//! Handlers, one module per section of the contract. Each handler is thin: extractors have
//! already authenticated, authorised and parsed; the handler applies domain rules and stores.

pub mod accounts;
pub mod events;
pub mod holds;
pub mod live;
pub mod orders;
pub mod push;
pub mod queue;
pub mod search;
pub mod system;
pub mod venues;
pub mod webhooks;
