//! Durable records for bulkhead: pods, containers, images, network state and
//! anything else that must survive a `kill -9` of the process that wrote it.
//! A [`Collection`] is a directory holding one JSON file per object; every
//! write goes to a temporary file that is fsynced and then renamed over the
//! record, and the directory is fsynced, so a reader — or a restart after a
//! crash at any instant — sees either the old record or the new one, never a
//! torn one. A collection of records that die with the machine anyway may
//! be opened [`Durability::Volatile`]: as atomic, without the fsyncs. The
//! API is synchronous and thread-free so the single-threaded pod
//! monitor can use it as well as the daemon (which calls it off its async
//! executor). This crate must not know what the records mean: no CRI types,
//! no policy, no locking beyond what the filesystem gives.

mod collection;
mod error;

pub use collection::{Collection, Durability, validate_id};
pub use error::{Error, Result};
