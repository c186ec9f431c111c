//! Group commit: concurrent writes share one round trip to MongoDB.
//!
//! A worker that submits a document while no write is under way becomes the writer: it
//! takes every document queued so far (its own included), writes them with one command,
//! and hands each submitter's answer its own result. Submitters that arrive meanwhile
//! queue their document with their answer and go back to other work at once; the
//! writer, once done, writes what queued meanwhile, until nothing is left. An unloaded
//! server writes each document at once, as before; a loaded one writes a batch per round
//! trip (and per journal flush) instead of a document per round trip, and its workers do
//! not sleep waiting for a write they take no part in: a submitter that parked until its
//! batch was written cost a context switch per write (measured: 2.1 voluntary switches
//! per `POST` on the workers, against 1 for the wait for the next request).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, PoisonError};

/// What a submitter does with its result, on the writer's thread.
pub type Answer<R> = Box<dyn FnOnce(R) + Send>;

pub struct Batcher<T, R> {
    state: Mutex<State<T, R>>,
}

struct State<T, R> {
    queued: Vec<(T, Answer<R>)>,
    writing: bool,
}

impl<T, R> Default for Batcher<T, R> {
    fn default() -> Self {
        Batcher {
            state: Mutex::new(State {
                queued: Vec::new(),
                writing: false,
            }),
        }
    }
}

/// Hands each result to its answer. One answer that panics (a bug) must not cost the
/// others theirs, nor leave the batcher writing forever.
fn hand_out<R>(answers: Vec<Answer<R>>, results: impl Iterator<Item = R>) {
    for (answer, result) in answers.into_iter().zip(results) {
        if catch_unwind(AssertUnwindSafe(|| answer(result))).is_err() {
            tracing::error!("answering a batched write panicked");
        }
    }
}

impl<T, R: Clone> Batcher<T, R> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T, R>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Submits `item`; `answer` gets its result, on this thread or on the writer's. If no
    /// write is under way this thread writes, and returns once nothing is queued; else it
    /// returns at once. `write` gets a batch and returns one result per item, in order;
    /// if it panics, every item of its batch gets `failed`. If `dooms_queue` finds in a
    /// batch's results one that items queued meanwhile would only meet again (the
    /// database is gone), they get it at once instead of waiting for their own attempt.
    pub fn submit(
        &self,
        item: T,
        answer: Answer<R>,
        write: impl Fn(Vec<T>) -> Vec<R>,
        dooms_queue: impl Fn(&[R]) -> Option<R>,
        failed: R,
    ) {
        let mut state = self.lock();
        state.queued.push((item, answer));
        if state.writing {
            return;
        }
        state.writing = true;
        while !state.queued.is_empty() {
            let (items, answers): (Vec<T>, Vec<Answer<R>>) =
                std::mem::take(&mut state.queued).into_iter().unzip();
            drop(state);
            let count = items.len();
            let results = catch_unwind(AssertUnwindSafe(|| write(items))).unwrap_or_else(|_| {
                tracing::error!("a batched write panicked");
                vec![failed.clone(); count]
            });
            debug_assert_eq!(results.len(), count, "one result per item");
            let doom = dooms_queue(&results);
            hand_out(answers, results.into_iter());
            state = self.lock();
            if let Some(doom) = doom {
                let doomed: Vec<Answer<R>> = std::mem::take(&mut state.queued)
                    .into_iter()
                    .map(|(_, answer)| answer)
                    .collect();
                drop(state);
                hand_out(doomed, std::iter::repeat(doom));
                state = self.lock();
            }
        }
        state.writing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    /// A write that, given the batch `[1]`, says it has begun and waits until `finish`:
    /// so that a test can submit while a write is under way.
    struct HeldWrite {
        begun: mpsc::Sender<()>,
        started: Mutex<mpsc::Receiver<()>>,
        finish: mpsc::Sender<()>,
        may_finish: Mutex<mpsc::Receiver<()>>,
    }

    impl HeldWrite {
        fn new() -> HeldWrite {
            let (begun, started) = mpsc::channel();
            let (finish, may_finish) = mpsc::channel();
            HeldWrite {
                begun,
                started: Mutex::new(started),
                finish,
                may_finish: Mutex::new(may_finish),
            }
        }

        fn wait_until_begun(&self) {
            self.started.lock().unwrap().recv().unwrap();
        }

        fn let_finish(&self) {
            self.finish.send(()).unwrap();
        }

        fn write<T: PartialEq + From<u8>>(&self, batch: Vec<T>) -> Vec<T> {
            if batch == [T::from(1)] {
                self.begun.send(()).unwrap();
                self.may_finish.lock().unwrap().recv().unwrap();
            }
            batch
        }
    }

    /// An answer that sends its result, tagged, to `to`.
    fn send_to<R: Send + 'static>(to: &mpsc::Sender<(u32, R)>, tag: u32) -> Answer<R> {
        let to = to.clone();
        Box::new(move |r| to.send((tag, r)).unwrap())
    }

    #[test]
    fn every_submitter_gets_its_own_result_and_writes_are_batched() {
        let batcher = Batcher::default();
        let writes = AtomicUsize::new(0);
        let largest = AtomicUsize::new(0);
        let (to, results) = mpsc::channel();
        std::thread::scope(|scope| {
            for i in 0..64u32 {
                let (batcher, writes, largest, to) = (&batcher, &writes, &largest, &to);
                scope.spawn(move || {
                    batcher.submit(
                        i,
                        send_to(to, i),
                        |batch: Vec<u32>| {
                            writes.fetch_add(1, Ordering::Relaxed);
                            largest.fetch_max(batch.len(), Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(5));
                            batch.into_iter().map(|x| x * 10).collect()
                        },
                        |_| None,
                        0,
                    )
                });
            }
        });
        drop(to);
        let results: Vec<(u32, u32)> = results.iter().collect();
        assert_eq!(results.len(), 64, "an answer lost or given twice");
        assert!(results.iter().all(|(i, r)| *r == i * 10));
        assert!(writes.load(Ordering::Relaxed) < 64, "nothing was batched");
        assert!(largest.load(Ordering::Relaxed) > 1);
    }

    #[test]
    fn a_submitter_behind_a_write_goes_back_to_work_and_the_writer_writes_its_item() {
        let batcher = Batcher::default();
        let (to, results) = mpsc::channel();
        let held = HeldWrite::new();
        let write = |batch| held.write(batch);
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| batcher.submit(1, send_to(&to, 1), write, |_| None, 0));
            held.wait_until_begun();
            // A write is under way: this returns without its result.
            batcher.submit(2, send_to(&to, 2), write, |_| None, 0);
            assert!(
                results.try_recv().is_err(),
                "answered before any write ended"
            );
            held.let_finish();
            // The writer wrote the item queued meanwhile before it returned.
            writer.join().unwrap();
        });
        let mut answered: Vec<(u32, u32)> = results.try_iter().collect();
        answered.sort_unstable();
        assert_eq!(answered, [(1, 1), (2, 2)]);
    }

    #[test]
    fn a_write_that_panics_fails_its_batch_and_the_next_write_goes_on() {
        let batcher = Batcher::default();
        let (to, results) = mpsc::channel();
        batcher.submit(
            1,
            send_to(&to, 1),
            |_: Vec<i32>| panic!("a bug in the write"),
            |_| None,
            -1,
        );
        assert_eq!(results.try_recv().unwrap(), (1, -1));
        // Not stuck: the next submitter writes its own.
        batcher.submit(2, send_to(&to, 2), |batch: Vec<i32>| batch, |_| None, -1);
        assert_eq!(results.try_recv().unwrap(), (2, 2));
    }

    #[test]
    fn an_answer_that_panics_costs_no_other_its_answer() {
        let batcher = Batcher::default();
        let (to, results) = mpsc::channel();
        let held = HeldWrite::new();
        let write = |batch| held.write(batch);
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| batcher.submit(1, send_to(&to, 1), write, |_| None, 0));
            held.wait_until_begun();
            batcher.submit(2, Box::new(|_| panic!("a bug")), write, |_| None, 0);
            batcher.submit(3, send_to(&to, 3), write, |_| None, 0);
            held.let_finish();
            writer.join().unwrap();
        });
        let mut answered: Vec<(u32, i32)> = results.try_iter().collect();
        answered.sort_unstable();
        assert_eq!(answered, [(1, 1), (3, 3)]);
        // Nothing left writing: the next submitter writes at once.
        batcher.submit(4, send_to(&to, 4), |batch: Vec<i32>| batch, |_| None, 0);
        assert_eq!(results.try_recv().unwrap(), (4, 4));
    }

    #[test]
    fn a_lone_submitter_writes_at_once() {
        let batcher = Batcher::default();
        let (to, results) = mpsc::channel();
        batcher.submit(7, send_to(&to, 7), |batch: Vec<i32>| batch, |_| None, 0);
        assert_eq!(results.try_recv().unwrap(), (7, 7));
        batcher.submit(8, send_to(&to, 8), |batch: Vec<i32>| batch, |_| None, 0);
        assert_eq!(results.try_recv().unwrap(), (8, 8));
    }

    #[test]
    fn a_doomed_write_answers_the_queue_without_trying_it() {
        let batcher = Batcher::default();
        let attempts = AtomicUsize::new(0);
        let (to, results) = mpsc::channel();
        std::thread::scope(|scope| {
            for i in 0..16u32 {
                let (batcher, attempts, to) = (&batcher, &attempts, &to);
                scope.spawn(move || {
                    batcher.submit(
                        i as i32,
                        send_to(to, i),
                        |batch: Vec<i32>| {
                            attempts.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(20));
                            vec![-1; batch.len()]
                        },
                        |results| results.first().copied(),
                        0,
                    )
                });
            }
        });
        drop(to);
        let results: Vec<(u32, i32)> = results.iter().collect();
        assert_eq!(results.len(), 16);
        assert!(results.iter().all(|(_, r)| *r == -1));
        assert!(
            attempts.load(Ordering::Relaxed) < 16,
            "every item was tried on its own"
        );
    }
}
