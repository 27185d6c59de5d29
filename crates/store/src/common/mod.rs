//! What the two engines share: the catalog and inventory operations written once over
//! [`engine::SqlEngine`], the reads (the same SQL on both), turning rows back into domain values,
//! and the payloads of the outbox.

mod catalog;
pub(crate) mod catalog_reads;
pub(crate) mod engine;
pub(crate) mod inventory;
pub(crate) mod inventory_reads;
pub(crate) mod payloads;
pub(crate) mod rows;
