//! The names a stream subscribes to, with a fingerprint that answers "does it want
//! exactly these?" without comparing name by name.
//!
//! In a full push every sidecar's stream subscribes to all 10 000 endpoint sets, and
//! before sending a base's whole set the server checks that the stream wants all of
//! it. Walking both name lists in order is 10 000 string comparisons per stream, each
//! touching two cold strings: a quarter of a second of the server thread per push of
//! 100 streams. Comparing fingerprints is one comparison; the walk stays for the case
//! where they differ (a stream that wants more than there is).

use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::ops::Deref;
use std::sync::OnceLock;

use crate::Name;

/// A set of names summarised: how many, and the sum of a keyed hash of each. Sums can
/// be updated one name at a time and added across a snapshot's layers. Two different
/// sets agree by chance once in 2^64; the key is random per process, so a client
/// cannot choose names that agree with a set it does not want (and if one did, it
/// would receive resources of its own view that it did not ask for, nothing else).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    count: usize,
    sum: u64,
}

fn key() -> &'static RandomState {
    static KEY: OnceLock<RandomState> = OnceLock::new();
    KEY.get_or_init(RandomState::new)
}

impl Fingerprint {
    pub fn of<T: AsRef<[u8]>>(names: impl IntoIterator<Item = T>) -> Self {
        let mut f = Fingerprint::default();
        for name in names {
            f.add(name.as_ref());
        }
        f
    }

    /// Names are hashed as bytes, whether a snapshot's `String` or a request's `Name`.
    pub fn add(&mut self, name: &[u8]) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(key().hash_one(name));
    }

    fn remove(&mut self, name: &[u8]) {
        self.count -= 1;
        self.sum = self.sum.wrapping_sub(key().hash_one(name));
    }

    pub fn plus(self, other: Fingerprint) -> Self {
        Fingerprint {
            count: self.count + other.count,
            sum: self.sum.wrapping_add(other.sum),
        }
    }
}

/// Subscribed names and their fingerprint, kept in step. Reads go through `Deref`;
/// sets are searched by `name.as_bytes()`. The names are slices of the requests that
/// carried them: a sidecar's first endpoint subscription is 10 000 names, and as
/// `String`s each was an allocation and a copy on the server's one thread, 100 streams
/// at a time in a full push.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Wanted {
    names: BTreeSet<Name>,
    fingerprint: Fingerprint,
}

impl Wanted {
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    pub fn insert(&mut self, name: Name) {
        let mut f = self.fingerprint;
        f.add(name.as_bytes());
        if self.names.insert(name) {
            self.fingerprint = f;
        }
    }

    pub fn remove(&mut self, name: &[u8]) {
        if self.names.remove(name) {
            self.fingerprint.remove(name);
        }
    }
}

impl FromIterator<Name> for Wanted {
    /// One bulk build (a first subscription of thousands of names comes sorted), then
    /// the fingerprint of what it kept.
    fn from_iter<I: IntoIterator<Item = Name>>(names: I) -> Self {
        let names: BTreeSet<Name> = names.into_iter().collect();
        let fingerprint = Fingerprint::of(&names);
        Wanted { names, fingerprint }
    }
}

impl Extend<Name> for Wanted {
    fn extend<I: IntoIterator<Item = Name>>(&mut self, names: I) {
        for name in names {
            self.insert(name);
        }
    }
}

impl Deref for Wanted {
    type Target = BTreeSet<Name>;

    fn deref(&self) -> &BTreeSet<Name> {
        &self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<Name> {
        list.iter().map(|n| Name::from(*n)).collect()
    }

    /// However a set was reached (built at once, grown, shrunk, with repeats), its
    /// fingerprint is that of its names; different sets differ.
    #[test]
    fn fingerprint_follows_the_names() {
        let whole: Wanted = names(&["a", "b", "c"]).into_iter().collect();
        let mut grown = Wanted::default();
        grown.extend(names(&["c", "a", "x", "b", "a"]));
        grown.remove(b"x");
        grown.remove(b"never");
        assert_eq!(grown, whole);
        assert_eq!(
            grown.fingerprint(),
            Fingerprint::of(names(&["a", "b", "c"]))
        );
        let split = Fingerprint::of(names(&["a"])).plus(Fingerprint::of(names(&["b", "c"])));
        assert_eq!(split, whole.fingerprint());
        // A snapshot's names are `String`s: the same names, the same fingerprint.
        assert_eq!(
            Fingerprint::of(["a", "b", "c"].map(String::from).iter()),
            split
        );
        for other in [
            &["a", "b"][..],
            &["a", "b", "d"],
            &["a", "b", "c", "d"],
            &[],
        ] {
            assert_ne!(
                Fingerprint::of(names(other)),
                whole.fingerprint(),
                "{other:?}"
            );
        }
    }
}
