//! [`Shared`]: a value many resources hold alike, stored once. The machines of
//! one MachineDeployment carry the same labels and infrastructure settings;
//! held per machine, a 100,000-machine state spent ~70 MB on copies of a
//! hundred label maps. Cloning a `Shared` copies a pointer, and reading one
//! (state, saved plan, journal) reuses the value it read last when they are
//! equal, so a state read from disk shares them too.
//!
//! It reads and writes (JSON, schema) exactly as the value it holds. The
//! simulator's refresh uses it too, for the strings every machine record
//! repeats.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::InfraSpec;

/// Distinct values remembered per thread and type while reading.
const RECENT: usize = 8;

/// A value stored once and shared by the resources that hold it alike.
#[derive(Clone, PartialEq)]
pub struct Shared<T>(Arc<T>);

impl<T> Shared<T> {
    pub(crate) fn new(value: T) -> Self {
        Shared(Arc::new(value))
    }
}

impl<T: Recent> Shared<T> {
    /// `value`, or the equal value read or made last on this thread.
    pub(crate) fn recent(value: T) -> Self {
        T::share(value)
    }
}

impl<T: Clone> Shared<T> {
    /// The value to change (copied first if another holder shares it).
    pub(crate) fn make_mut(&mut self) -> &mut T {
        Arc::make_mut(&mut self.0)
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: fmt::Debug> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

// Through the recent values: a state's machines without annotations share
// one empty map.
impl<T: Default + Recent> Default for Shared<T> {
    fn default() -> Self {
        T::share(T::default())
    }
}

impl<T: Eq> Eq for Shared<T> {}

impl<T: PartialOrd> PartialOrd for Shared<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        (*self.0).partial_cmp(&*other.0)
    }
}

impl<T: Ord> Ord for Shared<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (*self.0).cmp(&*other.0)
    }
}

impl<T: std::hash::Hash> std::hash::Hash for Shared<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (*self.0).hash(state)
    }
}

impl<T: fmt::Display> fmt::Display for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq<String> for Shared<String> {
    fn eq(&self, other: &String) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<str> for Shared<String> {
    fn eq(&self, other: &str) -> bool {
        *self.0 == other
    }
}

impl PartialEq<&str> for Shared<String> {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == *other
    }
}

impl From<&str> for Shared<String> {
    fn from(text: &str) -> Self {
        Shared::new(text.to_string())
    }
}

impl<T> From<T> for Shared<T> {
    fn from(value: T) -> Self {
        Shared::new(value)
    }
}

impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de> + Recent> Deserialize<'de> for Shared<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(T::share(T::deserialize(d)?))
    }
}

/// Types read into a [`Shared`]: each remembers, per thread, the last
/// distinct values read, and hands out the one equal to a new read.
pub trait Recent: PartialEq + Sized + 'static {
    fn recent() -> &'static std::thread::LocalKey<RefCell<Vec<Arc<Self>>>>;

    fn share(value: Self) -> Shared<Self> {
        Self::recent().with(|cell| {
            let mut recent = cell.borrow_mut();
            if let Some(i) = recent.iter().position(|r| **r == value) {
                let hit = Arc::clone(&recent[i]);
                // Most recent first: a state is sorted by address, so a
                // group's machines are read one after another.
                recent[..=i].rotate_right(1);
                return Shared(hit);
            }
            let new = Arc::new(value);
            recent.insert(0, Arc::clone(&new));
            recent.truncate(RECENT);
            Shared(new)
        })
    }
}

thread_local! {
    static LABELS: RefCell<Vec<Arc<BTreeMap<String, String>>>> = const { RefCell::new(Vec::new()) };
    static INFRA: RefCell<Vec<Arc<InfraSpec>>> = const { RefCell::new(Vec::new()) };
    static TEXT: RefCell<Vec<Arc<String>>> = const { RefCell::new(Vec::new()) };
}

impl Recent for String {
    fn recent() -> &'static std::thread::LocalKey<RefCell<Vec<Arc<Self>>>> {
        &TEXT
    }
}

impl Recent for BTreeMap<String, String> {
    fn recent() -> &'static std::thread::LocalKey<RefCell<Vec<Arc<Self>>>> {
        &LABELS
    }
}

impl Recent for InfraSpec {
    fn recent() -> &'static std::thread::LocalKey<RefCell<Vec<Arc<Self>>>> {
        &INFRA
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Labels = Shared<BTreeMap<String, String>>;

    fn labels(group: &str) -> String {
        format!(r#"{{"cluster.x-k8s.io/deployment-name":"{group}"}}"#)
    }

    #[test]
    fn equal_values_read_one_after_another_are_stored_once() {
        let a: Labels = serde_json::from_str(&labels("md-0")).unwrap();
        let b: Labels = serde_json::from_str(&labels("md-0")).unwrap();
        let c: Labels = serde_json::from_str(&labels("md-1")).unwrap();
        let d: Labels = serde_json::from_str(&labels("md-0")).unwrap();
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert!(!Arc::ptr_eq(&a.0, &c.0));
        assert!(Arc::ptr_eq(&a.0, &d.0), "still among the recent values");
        assert_eq!(serde_json::to_string(&d).unwrap(), labels("md-0"));
    }

    #[test]
    fn a_change_to_one_holder_leaves_the_others_alone() {
        let a: Labels = serde_json::from_str(&labels("md-7")).unwrap();
        let mut b: Labels = serde_json::from_str(&labels("md-7")).unwrap();
        b.make_mut().insert("extra".into(), "1".into());
        assert_eq!(a.len(), 1);
        assert_eq!(b.len(), 2);
        // Forgotten once more distinct values than it remembers came by.
        for i in 0..RECENT {
            let _: Labels = serde_json::from_str(&labels(&format!("other-{i}"))).unwrap();
        }
        let again: Labels = serde_json::from_str(&labels("md-7")).unwrap();
        assert!(!Arc::ptr_eq(&a.0, &again.0));
        assert_eq!(a, again);
    }
}
