//! The state: what `capi` has created, as a locked, checksummed JSON file.
//!
//! Pure (any floor may use them):
//! - [`model`]: the types (also the source of the JSON Schema in `state-schema/`);
//! - [`codec`]: the checksummed snapshot and journal-line encodings;
//! - [`cipher`]: encryption at rest of the sensitive values;
//! - [`schema`]: the state's JSON Schema.
//!
//! Persistence (I/O; used by the executor and the CLI only):
//! - [`store`]: atomic load/save with checksum and backup, journal replay;
//! - [`stream`]: reading an intact snapshot as it streams in (the fast path
//!   of [`store`]'s load);
//! - [`journal`]: the write-ahead journal apply commits through;
//! - [`lock`]: the kernel file lock held for a whole plan/apply/destroy;
//! - [`backend`]: the state-store trait and the handle commands use, over
//!   the file store above or [`etcd`] (a shared state on an etcd cluster).

pub(crate) mod backend;
pub(crate) mod cipher;
pub(crate) mod codec;
pub(crate) mod etcd;
pub(crate) mod files;
pub(crate) mod journal;
pub(crate) mod lock;
pub(crate) mod model;
pub mod schema;
pub(crate) mod store;
pub(crate) mod stream;

pub use backend::StateStore;
pub(crate) use backend::{HeldLock, Location};
pub(crate) use cipher::StateKey;
pub(crate) use etcd::client::{Credentials, EtcdAccess, TlsFiles};
pub(crate) use journal::Journal;
pub(crate) use lock::LockError;
pub use model::*;
pub use store::StateError;
