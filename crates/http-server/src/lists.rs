//! Deadlines in O(1): every connection that waits on a timer is in exactly one list of
//! its class, in the order its timer started. Each class has one fixed duration, so the
//! list's front is always the next to expire: entering a class, or renewing its timer,
//! is a move to the back; the loop's `epoll_wait` sleeps until the earliest front.
//! (The request-rate checkpoints are one second apart for everyone, which keeps those
//! lists in order too.) The same lists give eviction its candidates, oldest first.

use std::time::Instant;

/// What a connection waits for, as far as timers and eviction go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Accepted, no byte of a first request yet.
    Fresh,
    /// Keep-alive, between requests.
    Idle,
    /// Receiving a request at or above the minimum rate at its last checkpoint.
    Steady,
    /// Receiving below the minimum rate at its last checkpoint.
    Slow,
    /// Receiving a request not yet checked (its first second).
    Unproven,
    /// Waiting for memory for its body.
    Memory,
    /// Writing a response; the timer is renewed by every byte the client takes.
    Writing,
    /// Discarding what a client still sends before closing.
    Lingering,
    /// Accepted but silent when the server began to drain: a moment to send a request.
    Grace,
}

const CLASSES: usize = 9;
const NIL: u32 = u32::MAX;

impl Class {
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy)]
struct Link {
    class: Option<Class>,
    prev: u32,
    next: u32,
    since: Instant,
}

#[derive(Clone, Copy)]
struct Ends {
    head: u32,
    tail: u32,
    len: usize,
}

pub(crate) struct Lists {
    links: Vec<Link>,
    ends: [Ends; CLASSES],
}

impl Lists {
    pub(crate) fn new() -> Lists {
        Lists {
            links: Vec::new(),
            ends: [Ends {
                head: NIL,
                tail: NIL,
                len: 0,
            }; CLASSES],
        }
    }

    fn link(&mut self, slot: usize) -> &mut Link {
        if slot >= self.links.len() {
            let blank = Link {
                class: None,
                prev: NIL,
                next: NIL,
                since: Instant::now(),
            };
            self.links.resize(slot + 1, blank);
        }
        &mut self.links[slot]
    }

    /// Puts `slot` at the back of `class`, its timer started at `since` (out of any list
    /// it was in).
    pub(crate) fn put(&mut self, slot: usize, class: Class, since: Instant) {
        self.remove(slot);
        let tail = self.ends[class.index()].tail;
        {
            let link = self.link(slot);
            link.class = Some(class);
            link.prev = tail;
            link.next = NIL;
            link.since = since;
        }
        match tail {
            NIL => self.ends[class.index()].head = slot as u32,
            tail => self.links[tail as usize].next = slot as u32,
        }
        let ends = &mut self.ends[class.index()];
        ends.tail = slot as u32;
        ends.len += 1;
    }

    /// Takes `slot` out of its list, if it is in one.
    pub(crate) fn remove(&mut self, slot: usize) {
        let Some(link) = self.links.get(slot).copied() else {
            return;
        };
        let Some(class) = link.class else {
            return;
        };
        match link.prev {
            NIL => self.ends[class.index()].head = link.next,
            prev => self.links[prev as usize].next = link.next,
        }
        match link.next {
            NIL => self.ends[class.index()].tail = link.prev,
            next => self.links[next as usize].prev = link.prev,
        }
        self.ends[class.index()].len -= 1;
        let link = &mut self.links[slot];
        link.class = None;
        link.prev = NIL;
        link.next = NIL;
    }

    /// The connection whose timer in `class` started first, and when.
    pub(crate) fn front(&self, class: Class) -> Option<(usize, Instant)> {
        match self.ends[class.index()].head {
            NIL => None,
            head => Some((head as usize, self.links[head as usize].since)),
        }
    }

    pub(crate) fn class_of(&self, slot: usize) -> Option<Class> {
        self.links.get(slot).and_then(|l| l.class)
    }

    pub(crate) fn len(&self, class: Class) -> usize {
        self.ends[class.index()].len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_class_is_a_queue_in_the_order_timers_started() {
        let mut lists = Lists::new();
        let t = Instant::now();
        let at = |ms| t + Duration::from_millis(ms);
        lists.put(3, Class::Idle, at(1));
        lists.put(7, Class::Idle, at(2));
        lists.put(5, Class::Idle, at(3));
        lists.put(1, Class::Writing, at(4));
        assert_eq!(lists.front(Class::Idle), Some((3, at(1))));
        assert_eq!(lists.len(Class::Idle), 3);
        // Renewing moves to the back.
        lists.put(3, Class::Idle, at(5));
        assert_eq!(lists.front(Class::Idle), Some((7, at(2))));
        // Moving to another class takes it out of the first.
        lists.put(7, Class::Writing, at(6));
        assert_eq!(lists.front(Class::Idle), Some((5, at(3))));
        assert_eq!(lists.len(Class::Writing), 2);
        lists.remove(5);
        lists.remove(5);
        assert_eq!(lists.front(Class::Idle), Some((3, at(5))));
        lists.remove(3);
        assert_eq!(lists.front(Class::Idle), None);
        assert_eq!(lists.class_of(1), Some(Class::Writing));
        assert_eq!(lists.class_of(3), None);
        assert_eq!(lists.len(Class::Idle), 0);
        assert_eq!(lists.front(Class::Writing), Some((1, at(4))));
    }
}
