//! Pushing and pulling images over the OCI distribution API: blobs (with HEAD checks to skip
//! what the registry has, monolithic or chunked uploads, parallel and resumable downloads
//! verified against their digests) and manifests, with basic or bearer authentication.

pub mod auth;
pub mod client;
pub mod pull;
pub mod push;
pub mod target;

pub use client::{ClientConfig, RegistryError};
pub use target::Target;

use corral_image::Digest;

/// Hears what a transfer does, to show it. Called from several threads at once.
pub trait Events: Sync {
    fn blob_skipped(&self, digest: &Digest, size: u64);
    fn blob_progress(&self, digest: &Digest, done: u64, size: u64);
    fn blob_done(&self, digest: &Digest, size: u64);
}
