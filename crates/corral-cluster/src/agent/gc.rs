//! What an agent cleans up, decided without I/O: ended task containers after a retention period
//! (and at once beyond a count, oldest first), task sandboxes after theirs, and images when the
//! disk passes a high-water mark (least recently used first, never one a container uses).

use std::time::Duration;

/// How long what ended is kept, and how much of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GcPolicy {
    /// An ended task's container (its root filesystem and logs) is removed this long after the
    /// master acknowledged the end; its output is kept in its sandbox.
    pub container_retention: Duration,
    /// Ended containers kept at most; the oldest beyond are removed at once.
    pub max_ended_containers: usize,
    /// A sandbox (fetched files, working directory, output) is removed this long after its task
    /// was forgotten.
    pub sandbox_retention: Duration,
    /// Sandboxes kept at most.
    pub max_sandboxes: usize,
    /// Images are removed when the state root's filesystem is fuller than this (percent)...
    pub image_high_water: u8,
    /// ... until it is at most this full.
    pub image_low_water: u8,
}

impl Default for GcPolicy {
    fn default() -> GcPolicy {
        GcPolicy {
            container_retention: Duration::from_secs(3600),
            max_ended_containers: 100,
            // Mesos's default `gc_delay`.
            sandbox_retention: Duration::from_secs(7 * 24 * 3600),
            max_sandboxes: 1000,
            image_high_water: 90,
            image_low_water: 80,
        }
    }
}

/// Of `items` (each with when it ended, ms), those to remove: ended more than `retention` ago,
/// and the oldest beyond `max`.
pub fn expired<T: Clone>(items: &[(T, u64)], now_ms: u64, retention: Duration, max: usize) -> Vec<T> {
    let mut by_age: Vec<&(T, u64)> = items.iter().collect();
    by_age.sort_by_key(|(_, at)| std::cmp::Reverse(*at));
    let retention_ms = retention.as_millis() as u64;
    by_age
        .into_iter()
        .enumerate()
        .filter(|(i, (_, at))| *i >= max || now_ms.saturating_sub(*at) > retention_ms)
        .map(|(_, (item, _))| item.clone())
        .collect()
}

/// Whether `used` of `total` bytes is at or above the image high-water mark.
pub fn above_high_water(used: u64, total: u64, policy: &GcPolicy) -> bool {
    percent(used, total) >= policy.image_high_water as u64
}

fn percent(bytes: u64, total: u64) -> u64 {
    if total == 0 {
        0
    } else {
        (bytes as u128 * 100 / total as u128) as u64
    }
}

/// An image in the store, as image collection sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageUse {
    pub reference: String,
    /// When a container was last made from it (ms; its pull or tag time when never).
    pub last_used_ms: u64,
    /// Bytes it would free (its blobs and unpacked layers no other image shares; an estimate).
    pub bytes: u64,
    /// A container (running or ended, not yet removed) uses it.
    pub in_use: bool,
}

/// Which images to remove when `used` of `total` bytes of the disk are taken: nothing below the
/// high-water mark; above it, the least recently used images no container uses, until the
/// estimate reaches the low-water mark.
pub fn images_to_remove(images: &[ImageUse], used: u64, total: u64, policy: &GcPolicy) -> Vec<String> {
    if !above_high_water(used, total, policy) {
        return Vec::new();
    }
    let percent = |bytes: u64| percent(bytes, total);
    let mut candidates: Vec<&ImageUse> = images.iter().filter(|i| !i.in_use).collect();
    candidates.sort_by(|a, b| a.last_used_ms.cmp(&b.last_used_ms).then(a.reference.cmp(&b.reference)));
    let mut left = used;
    let mut out = Vec::new();
    for i in candidates {
        if percent(left) <= policy.image_low_water as u64 {
            break;
        }
        left = left.saturating_sub(i.bytes);
        out.push(i.reference.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_ended_goes_after_its_retention_and_beyond_the_count() {
        let hour = Duration::from_secs(3600);
        let now = 10 * 3_600_000;
        let items = [("old", now - 2 * 3_600_000), ("new", now - 1000), ("newer", now - 10), ("mid", now - 1_800_000)];
        assert_eq!(expired(&items, now, hour, 10), ["old"]);
        assert_eq!(expired(&items, now, hour, 2), ["mid", "old"], "the oldest beyond the count too");
        assert_eq!(expired(&items, now, hour, 0).len(), 4);
        assert!(expired::<&str>(&[], now, hour, 0).is_empty());
    }

    #[test]
    fn images_go_least_recently_used_first_never_one_in_use() {
        let policy = GcPolicy { image_high_water: 85, image_low_water: 80, ..GcPolicy::default() };
        let image =
            |r: &str, last_used_ms, bytes, in_use| ImageUse { reference: r.into(), last_used_ms, bytes, in_use };
        let images = [
            image("a:1", 100, 5, false),
            image("b:1", 50, 5, true),
            image("c:1", 10, 5, false),
            image("d:1", 200, 5, false),
        ];
        assert!(images_to_remove(&images, 84, 100, &policy).is_empty(), "below the high-water mark");
        assert_eq!(images_to_remove(&images, 88, 100, &policy), ["c:1", "a:1"], "until at the low-water mark");
        assert_eq!(images_to_remove(&images, 100, 100, &policy), ["c:1", "a:1", "d:1"], "never b, in use");
        assert!(images_to_remove(&images, 0, 0, &policy).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn an_image_in_use_is_never_chosen(
            uses in proptest::collection::vec((0u64..1000, 0u64..100, proptest::bool::ANY), 0..20),
            used in 0u64..200,
        ) {
            let images: Vec<ImageUse> = uses
                .iter()
                .enumerate()
                .map(|(n, (at, bytes, in_use))| ImageUse {
                    reference: format!("i:{n}"),
                    last_used_ms: *at,
                    bytes: *bytes,
                    in_use: *in_use,
                })
                .collect();
            let chosen = images_to_remove(&images, used, 100, &GcPolicy::default());
            for r in chosen {
                proptest::prop_assert!(images.iter().any(|i| i.reference == r && !i.in_use));
            }
        }
    }
}
