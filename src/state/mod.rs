//! The state: what `capi` has created, as a locked, checksummed JSON file.
//!
//! - [`model`]: the types (also the source of the JSON Schema in `state-schema/`);
//! - [`store`]: atomic load/save with checksum and backup;
//! - [`lock`]: the kernel file lock held for a whole plan/apply/destroy.

pub mod lock;
pub mod model;
pub mod schema;
pub mod store;

pub use lock::{LockError, LockInfo, StateLock};
pub use model::*;
pub use store::{StateError, StateStore};
