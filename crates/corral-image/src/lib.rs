//! The image store: a content-addressed OCI image layout on disk, image references, and a
//! hostile-input-safe layer extractor that unpacks layers into a shared, digest-keyed cache.
//!
//! Everything here works on plain files under a root directory; nothing here starts processes.

pub mod digest;
pub mod import;
pub mod layer;
pub mod layout;
pub mod reference;
pub mod store;

pub use digest::Digest;
pub use reference::Reference;
pub use store::{Image, Store};
