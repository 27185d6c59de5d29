//! What the two engines share: the reads (the same SQL on both), turning rows back into domain
//! values, and the payloads of the outbox. Writes are not here: each engine has its own.

pub(crate) mod catalog_reads;
pub(crate) mod inventory_reads;
pub(crate) mod payloads;
pub(crate) mod rows;
