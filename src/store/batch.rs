//! Group commit: concurrent writes share one round trip to MongoDB.
//!
//! A worker that submits a document while no write is under way becomes the leader: it
//! takes every document queued so far (its own included), writes them with one command,
//! and hands each submitter its own result. Submitters that arrive meanwhile queue up,
//! and one of them leads the next write as soon as the current one is done. An
//! unloaded server writes each document at once, as before; a loaded one writes a batch
//! per round trip (and per journal flush) instead of a document per round trip.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, PoisonError};

pub struct Batcher<T, R> {
    state: Mutex<State<T, R>>,
    done: Condvar,
}

struct State<T, R> {
    queued: Vec<(u64, T)>,
    results: HashMap<u64, R>,
    next_ticket: u64,
    writing: bool,
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
            done: Condvar::new(),
        }
    }
}

impl<T, R> Batcher<T, R> {
    /// Submits `item` and returns its result. `write` gets a batch and must return one
    /// result per item, in order; it must not panic (the others in its batch would wait
    /// forever), so it reports every failure as a result. If `dooms_queue` finds in a
    /// batch's results one that items queued meanwhile would only meet again (the database
    /// is gone), they get it at once instead of waiting for their own attempt.
    pub fn submit(
        &self,
        item: T,
        write: impl Fn(Vec<T>) -> Vec<R>,
        dooms_queue: impl Fn(&[R]) -> Option<R>,
    ) -> R
    where
        R: Clone,
    {
        let lock = || self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut state = lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queued.push((ticket, item));
        loop {
            if let Some(result) = state.results.remove(&ticket) {
                return result;
            }
            if state.writing {
                state = self
                    .done
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.writing = true;
            let (tickets, batch): (Vec<u64>, Vec<T>) =
                std::mem::take(&mut state.queued).into_iter().unzip();
            drop(state);
            let results = write(batch);
            debug_assert_eq!(results.len(), tickets.len(), "one result per item");
            let doom = dooms_queue(&results);
            state = lock();
            state.results.extend(tickets.into_iter().zip(results));
            if let Some(doom) = doom {
                let queued = std::mem::take(&mut state.queued);
                state
                    .results
                    .extend(queued.into_iter().map(|(t, _)| (t, doom.clone())));
            }
            state.writing = false;
            self.done.notify_all();
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
    fn a_lone_submitter_writes_at_once() {
        let batcher = Batcher::default();
        assert_eq!(batcher.submit(7, |batch: Vec<i32>| batch, |_| None), 7);
        assert_eq!(batcher.submit(8, |batch: Vec<i32>| batch, |_| None), 8);
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
