//! Reads from the in-memory view: lookups by ref, uuid and class, and
//! the generation counters.

use std::sync::Arc;

use super::{Object, Store};

impl Store {
    /// An object by ref.
    pub fn get(&self, reference: &str) -> Option<Arc<Object>> {
        self.read().ok()?.objects.get(reference).cloned()
    }

    /// An object by ref, only if it is of `class`.
    pub fn get_of(&self, class: &str, reference: &str) -> Option<Arc<Object>> {
        self.get(reference).filter(|o| o.class == class)
    }

    /// The object of `class` with `uuid`.
    pub fn by_uuid(&self, class: &str, uuid: &str) -> Option<Arc<Object>> {
        let memory = self.read().ok()?;
        let reference = memory.by_uuid.get(&(class.to_owned(), uuid.to_owned()))?;
        memory.objects.get(reference).cloned()
    }

    /// Every object of `class`, ordered by ref.
    pub fn all(&self, class: &str) -> Vec<Arc<Object>> {
        self.all_at_generation(class).1
    }

    /// Number of objects per class.
    pub fn counts(&self) -> Vec<(String, usize)> {
        let Ok(memory) = self.read() else {
            return Vec::new();
        };
        let mut counts: Vec<_> = memory
            .by_class
            .iter()
            .map(|(c, r)| (c.clone(), r.len()))
            .collect();
        counts.sort();
        counts
    }

    /// The current generation (id of the newest event).
    pub fn generation(&self) -> u64 {
        self.read().map(|m| m.generation).unwrap_or(0)
    }

    /// The generation of the newest change to an object of `class` (0 if
    /// none since the store was opened): equal values mean the class's
    /// objects are unchanged.
    pub fn class_generation(&self, class: &str) -> u64 {
        self.read()
            .ok()
            .and_then(|m| m.class_generations.get(class).copied())
            .unwrap_or(0)
    }

    /// Every object of `class`, ordered by ref, with the class generation
    /// they belong to (read together).
    pub fn all_at_generation(&self, class: &str) -> (u64, Vec<Arc<Object>>) {
        let Ok(memory) = self.read() else {
            return (0, Vec::new());
        };
        let generation = memory.class_generations.get(class).copied().unwrap_or(0);
        let objects = memory
            .by_class
            .get(class)
            .map(|refs| {
                refs.keys()
                    .filter_map(|r| memory.objects.get(r).cloned())
                    .collect()
            })
            .unwrap_or_default();
        (generation, objects)
    }
}
