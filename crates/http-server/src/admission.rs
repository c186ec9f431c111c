//! Connection slots across the event loops: how many connections are open, and which loop
//! a newcomer goes to. Every loop publishes, without a lock, how many connections it
//! holds and how many of them could make room (idle, or receiving below the minimum
//! rate); the accepting loop reads those numbers to place a newcomer in O(loops):
//! below the limit, on the least loaded loop; at the limit, on a loop that can make
//! room, which closes its oldest idle connection (or else its oldest slow one) for it;
//! when no loop can, the newcomer is refused with `503`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// What one loop publishes about its connections.
#[derive(Default)]
pub(crate) struct Load {
    connections: AtomicUsize,
    idle: AtomicUsize,
    slow: AtomicUsize,
    /// When its oldest idle connection went idle, in ms since the server started.
    oldest_idle: AtomicU64,
}

impl Load {
    /// Published by the loop after it changed its connections.
    pub(crate) fn publish(&self, connections: usize, idle: usize, slow: usize, oldest_idle: u64) {
        self.connections.store(connections, Ordering::Relaxed);
        self.idle.store(idle, Ordering::Relaxed);
        self.slow.store(slow, Ordering::Relaxed);
        self.oldest_idle.store(oldest_idle, Ordering::Relaxed);
    }
}

/// Where a newcomer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// A free slot on this loop.
    Open(usize),
    /// This loop makes room for it.
    Evict(usize),
    /// Every slot is taken by a connection that is being served.
    Full,
}

pub(crate) struct Admission {
    limit: usize,
    /// Connections open, including those on their way to a loop.
    open: AtomicUsize,
    loads: Vec<Load>,
    /// Where the search for the least loaded loop starts: a burst of newcomers, placed
    /// before any loop has published its new load, goes round the loops instead of all to
    /// the first.
    turn: AtomicUsize,
}

impl Admission {
    pub(crate) fn new(limit: usize, loops: usize) -> Admission {
        Admission {
            limit,
            open: AtomicUsize::new(0),
            loads: (0..loops).map(|_| Load::default()).collect(),
            turn: AtomicUsize::new(0),
        }
    }

    pub(crate) fn load(&self, index: usize) -> &Load {
        &self.loads[index]
    }

    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Places a newcomer (only the accepting loop calls this, so the count cannot pass the
    /// limit between the check and the increment).
    pub(crate) fn place(&self) -> Placement {
        if self.open() < self.limit {
            let count = self.loads.len();
            let first = self.turn.fetch_add(1, Ordering::Relaxed) % count;
            let index = (first..first + count)
                .map(|i| i % count)
                .min_by_key(|&i| self.loads[i].connections.load(Ordering::Relaxed))
                .expect("at least one loop");
            self.open.fetch_add(1, Ordering::AcqRel);
            return Placement::Open(index);
        }
        let idle = self
            .loads
            .iter()
            .enumerate()
            .filter(|(_, l)| l.idle.load(Ordering::Relaxed) > 0)
            .min_by_key(|(_, l)| l.oldest_idle.load(Ordering::Relaxed));
        if let Some((index, _)) = idle {
            return Placement::Evict(index);
        }
        self.loads
            .iter()
            .position(|l| l.slow.load(Ordering::Relaxed) > 0)
            .map_or(Placement::Full, Placement::Evict)
    }

    /// A newcomer took the slot of a connection closed to make room for it.
    pub(crate) fn admitted(&self) {
        self.open.fetch_add(1, Ordering::AcqRel);
    }

    /// A connection closed; returns how many are left.
    pub(crate) fn closed(&self) -> usize {
        self.open.fetch_sub(1, Ordering::AcqRel) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newcomers_go_to_the_least_loaded_loop_then_to_one_that_can_make_room() {
        let admission = Admission::new(4, 2);
        // Before any load is published, a burst goes round the loops.
        assert_eq!(admission.place(), Placement::Open(0));
        assert_eq!(admission.place(), Placement::Open(1));
        admission.load(0).publish(2, 0, 0, 0);
        admission.load(1).publish(1, 1, 0, 50);
        assert_eq!(admission.place(), Placement::Open(1));
        assert_eq!(admission.place(), Placement::Open(1));
        admission.load(0).publish(2, 1, 0, 20);
        admission.load(1).publish(2, 1, 1, 50);
        // Full: the loop whose idle connection is oldest makes room.
        assert_eq!(admission.place(), Placement::Evict(0));
        admission.load(0).publish(2, 0, 0, 0);
        assert_eq!(admission.place(), Placement::Evict(1));
        admission.load(1).publish(2, 0, 1, 0);
        assert_eq!(admission.place(), Placement::Evict(1), "a slow one then");
        admission.load(1).publish(2, 0, 0, 0);
        assert_eq!(admission.place(), Placement::Full);
        assert_eq!(admission.closed(), 3);
        assert!(matches!(admission.place(), Placement::Open(_)));
    }
}
