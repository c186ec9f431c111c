//! Group commit: concurrent writes share one round trip to MongoDB.
//!
//! A worker that submits a document while no write is under way becomes the leader: it
//! takes every document queued so far (its own included), writes them with one command,
//! and hands each submitter its own result. Submitters that arrive meanwhile queue up,
//! and one of them leads the next write as soon as the current one is done. An
//! unloaded server writes each document at once, as before; a loaded one writes a batch
//! per round trip (and per journal flush) instead of a document per round trip.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::thread::Thread;

pub struct Batcher<T, R> {
    state: Mutex<State<T, R>>,
}

struct State<T, R> {
    queued: Vec<Submitted<T>>,
    results: HashMap<u64, R>,
    next_ticket: u64,
    writing: bool,
}

/// A submitter waiting for its result, parked until it is there or it is its turn to
/// lead. Each is woken on its own: one condition variable for all would wake every
/// submitter at the end of every write, and those still queued would sleep again (under
/// load, two and a half wasted context switches per write, measured).
struct Submitted<T> {
    ticket: u64,
    waiter: Thread,
    item: T,
}

impl<T, R> Default for Batcher<T, R> {
    fn default() -> Self {
        Batcher {
            state: Mutex::new(State {
                queued: Vec::new(),
                results: HashMap::new(),
                next_ticket: 0,
                writing: false,
            }),
        }
    }
}

impl<T, R> State<T, R> {
    /// Hands each submitter of a batch its result but the leader (`own`), whose result
    /// it returns, with who to wake once the lock is released (woken under it, each would
    /// at once block on the lock again): those submitters, and the first of those queued
    /// meanwhile, to lead the next write.
    fn finish(
        &mut self,
        own: u64,
        batch: Vec<(u64, Thread)>,
        results: impl Iterator<Item = R>,
    ) -> (Option<R>, Vec<Thread>) {
        let mut mine = None;
        let mut wake = Vec::with_capacity(batch.len());
        for ((ticket, waiter), result) in batch.into_iter().zip(results) {
            if ticket == own {
                mine = Some(result);
            } else {
                self.results.insert(ticket, result);
                wake.push(waiter);
            }
        }
        self.writing = false;
        if let Some(next) = self.queued.first() {
            wake.push(next.waiter.clone());
        }
        (mine, wake)
    }
}

fn wake(threads: Vec<Thread>) {
    for thread in threads {
        thread.unpark();
    }
}

/// The leader's duty to the submitters of its batch: if the write panics, this hands each
/// of them `failed` and lets the next leader go, so nobody waits forever.
struct Leading<'b, T, R: Clone> {
    batcher: &'b Batcher<T, R>,
    batch: Vec<(u64, Thread)>,
    /// The leader's own ticket: it unwinds with the panic and never collects a result.
    own: u64,
    failed: R,
}

impl<T, R: Clone> Drop for Leading<'_, T, R> {
    fn drop(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch: Vec<(u64, Thread)> = std::mem::take(&mut self.batch)
            .into_iter()
            .filter(|(t, _)| *t != self.own)
            .collect();
        let failed = std::iter::repeat(self.failed.clone());
        let (_, woken) = self.batcher.lock().finish(self.own, batch, failed);
        wake(woken);
    }
}

impl<T, R> Batcher<T, R> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T, R>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Submits `item` and returns its result. `write` gets a batch and returns one result
    /// per item, in order; if it panics, every item of its batch gets `failed`. If
    /// `dooms_queue` finds in a batch's results one that items queued meanwhile would only
    /// meet again (the database is gone), they get it at once instead of waiting for their
    /// own attempt.
    pub fn submit(
        &self,
        item: T,
        write: impl Fn(Vec<T>) -> Vec<R>,
        dooms_queue: impl Fn(&[R]) -> Option<R>,
        failed: R,
    ) -> R
    where
        R: Clone,
    {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queued.push(Submitted {
            ticket,
            waiter: std::thread::current(),
            item,
        });
        loop {
            if let Some(result) = state.results.remove(&ticket) {
                return result;
            }
            if state.writing {
                // Woken with the result, or to lead; a wake-up meant for an earlier turn
                // (another submitter led first) only costs a look.
                drop(state);
                std::thread::park();
                state = self.lock();
                continue;
            }
            state.writing = true;
            let (batch, items): (Vec<(u64, Thread)>, Vec<T>) = std::mem::take(&mut state.queued)
                .into_iter()
                .map(|s| ((s.ticket, s.waiter), s.item))
                .unzip();
            drop(state);
            let mut leading = Leading {
                batcher: self,
                batch,
                own: ticket,
                failed: failed.clone(),
            };
            let results = write(items);
            debug_assert_eq!(results.len(), leading.batch.len(), "one result per item");
            let doom = dooms_queue(&results);
            let batch = std::mem::take(&mut leading.batch);
            drop(leading);
            state = self.lock();
            let mut doomed = Vec::new();
            if let Some(doom) = doom {
                for queued in std::mem::take(&mut state.queued) {
                    state.results.insert(queued.ticket, doom.clone());
                    doomed.push(queued.waiter);
                }
            }
            let (mine, woken) = state.finish(ticket, batch, results.into_iter());
            drop(state);
            wake(doomed);
            wake(woken);
            return mine.expect("the leader's item is in its batch");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn every_submitter_gets_its_own_result_and_writes_are_batched() {
        let batcher = Batcher::default();
        let writes = AtomicUsize::new(0);
        let largest = AtomicUsize::new(0);
        let results: Vec<(u32, u32)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..64u32)
                .map(|i| {
                    let (batcher, writes, largest) = (&batcher, &writes, &largest);
                    scope.spawn(move || {
                        let result = batcher.submit(
                            i,
                            |batch: Vec<u32>| {
                                writes.fetch_add(1, Ordering::Relaxed);
                                largest.fetch_max(batch.len(), Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(5));
                                batch.into_iter().map(|x| x * 10).collect()
                            },
                            |_| None,
                            0,
                        );
                        (i, result)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(results.iter().all(|(i, r)| *r == i * 10));
        assert!(writes.load(Ordering::Relaxed) < 64, "nothing was batched");
        assert!(largest.load(Ordering::Relaxed) > 1);
    }

    #[test]
    fn a_write_that_panics_fails_its_batch_and_the_next_leader_goes_on() {
        let batcher = Batcher::default();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            batcher.submit(1, |_: Vec<i32>| panic!("a bug in the write"), |_| None, -1)
        }));
        assert!(panicked.is_err());
        // The leader's own result is not left behind: it unwinds and never collects one.
        assert!(batcher.lock().results.is_empty(), "a leaked result");
        // Not stuck: the next submitter leads its own write.
        assert_eq!(batcher.submit(2, |batch: Vec<i32>| batch, |_| None, -1), 2);
        // Two submitters queued behind a write share the next batch; its write panics:
        // the one who led it panics, the other gets `failed`.
        let started = std::sync::Barrier::new(2);
        let write = |batch: Vec<i32>| {
            if batch.len() > 1 {
                panic!("a bug in the write");
            }
            if batch == [3] {
                started.wait();
                std::thread::sleep(Duration::from_millis(100));
            }
            batch
        };
        let mut results: Vec<i32> = std::thread::scope(|scope| {
            let submit = |item| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    batcher.submit(item, write, |_| None, -1)
                }))
                .unwrap_or(-2)
            };
            let first = scope.spawn(move || submit(3));
            // The first write has begun: the next two queue behind it.
            started.wait();
            let others: Vec<_> = [4, 5].map(|i| scope.spawn(move || submit(i))).into();
            let mut all = vec![first.join().unwrap()];
            all.extend(others.into_iter().map(|h| h.join().unwrap()));
            all
        });
        results.sort_unstable();
        assert_eq!(results, [-2, -1, 3]);
        assert!(batcher.lock().results.is_empty(), "a leaked result");
    }

    #[test]
    fn a_lone_submitter_writes_at_once() {
        let batcher = Batcher::default();
        assert_eq!(batcher.submit(7, |batch: Vec<i32>| batch, |_| None, 0), 7);
        assert_eq!(batcher.submit(8, |batch: Vec<i32>| batch, |_| None, 0), 8);
    }

    #[test]
    fn a_doomed_write_answers_the_queue_without_trying_it() {
        let batcher = Batcher::default();
        let attempts = AtomicUsize::new(0);
        let results: Vec<i32> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let (batcher, attempts) = (&batcher, &attempts);
                    scope.spawn(move || {
                        batcher.submit(
                            i,
                            |batch: Vec<i32>| {
                                attempts.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(20));
                                vec![-1; batch.len()]
                            },
                            |results| results.first().copied(),
                            0,
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(results.iter().all(|r| *r == -1));
        assert!(
            attempts.load(Ordering::Relaxed) < 16,
            "every item was tried on its own"
        );
    }
}
