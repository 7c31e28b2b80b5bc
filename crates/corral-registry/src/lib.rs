//! Pushing and pulling images over the OCI distribution API: blobs (with HEAD checks to skip
//! what the registry has, monolithic or chunked uploads, parallel and resumable downloads
//! verified against their digests) and manifests, with basic or bearer authentication.

pub mod auth;
pub mod client;
pub mod demand;
pub mod pull;
pub mod push;
pub mod target;

pub use client::{ClientConfig, RegistryError};
pub use demand::{PullPolicy, Puller, Registries};
pub use target::Target;

use corral_image::{Digest, Store};

/// How many blobs move at once.
pub const PARALLEL: usize = 4;

/// What every blob transfer of one push or pull shares.
pub(crate) struct Session<'a> {
    pub client: client::Client,
    pub store: &'a Store,
    pub target: &'a Target,
    /// The token scope: `repository:NAME:pull` or `...:pull,push`.
    pub scope: String,
    pub events: &'a dyn Events,
}

/// Runs `each` over `items`, `PARALLEL` at a time; the first error wins.
pub(crate) fn for_each_parallel<T: Sync>(
    items: &[T],
    each: impl Fn(&T) -> Result<(), RegistryError> + Sync,
) -> Result<(), RegistryError> {
    let each = &each;
    std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..PARALLEL).map(|i| s.spawn(move || items.iter().skip(i).step_by(PARALLEL).try_for_each(each))).collect();
        handles.into_iter().try_for_each(|h| h.join().expect("transfer threads do not panic"))
    })
}

/// Hears what a transfer does, to show it. Called from several threads at once.
pub trait Events: Sync {
    /// The blobs a pull will fetch (or find), before it starts on them.
    fn planned(&self, _blobs: &[(Digest, u64)]) {}
    fn blob_skipped(&self, digest: &Digest, size: u64);
    fn blob_progress(&self, digest: &Digest, done: u64, size: u64);
    fn blob_done(&self, digest: &Digest, size: u64);
}
