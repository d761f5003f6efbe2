//! A request body's first look, made without leaving a wake-up behind.
//!
//! actix-http calls the service as soon as it has decoded a request's
//! head, and feeds the body that came in the same read only after that
//! first poll; then, in the same pass over the connection, it polls the
//! service again. A handler that looks for its body on the first poll
//! leaves its task's waker with the payload, the feed wakes the task, and
//! the task makes a second pass over the connection that finds nothing to
//! do: a tenth of a cached verify's instructions (callgrind, 55.0 k →
//! 49.7 k a request).
//!
//! So the first look is made with a waker that does nothing, and the
//! handler yields without asking to be woken. That relies on the second
//! poll, which comes in the same pass when the request was decoded in it
//! (`poll_request` then `poll_response`). A pipelined request started
//! after its predecessor's answer is polled once and then waits for the
//! socket: if its body never comes, nothing would poll it again, and its
//! body timeout would never be set. A request that yields this way is
//! therefore put on its worker thread's watch until its next poll, and a
//! one-shot ticker wakes whatever is still on the watch after [`TICK`].
//! No request waits unwoken for longer than that; from its next poll on it
//! waits the usual way (the payload's waker and the body timeout).
//!
//! Off an actix arbiter (no ticker can be spawned there) the first look
//! asks to be woken as usual.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The longest a request that yielded without a wake-up waits for one.
/// It bounds only how late a body that never comes starts its timeout.
pub const TICK: Duration = Duration::from_secs(1);

/// `fut`'s output if it is ready now, looked for without leaving a waker
/// behind; `None` once the calling task has been polled again (at once by
/// actix's dispatcher, within [`TICK`] by the watch): then look again the
/// usual way.
pub async fn quietly<F: Future>(fut: Pin<&mut F>) -> Option<F::Output> {
    FirstLook {
        fut,
        state: State::Start,
    }
    .await
}

struct FirstLook<'a, F> {
    fut: Pin<&'a mut F>,
    state: State,
}

enum State {
    Start,
    /// Held for its drop, which takes it off the watch.
    Watched {
        _ticket: Ticket,
    },
    Done,
}

impl<F: Future> Future for FirstLook<'_, F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Start => {
                let mut quiet = Context::from_waker(Waker::noop());
                if let Poll::Ready(out) = self.fut.as_mut().poll(&mut quiet) {
                    return Poll::Ready(Some(out));
                }
                match watch(cx.waker()) {
                    Some(ticket) => {
                        self.state = State::Watched { _ticket: ticket };
                        Poll::Pending
                    }
                    None => Poll::Ready(None),
                }
            }
            // Polled again: `Ticket`'s drop takes it off the watch.
            State::Watched { .. } | State::Done => Poll::Ready(None),
        }
    }
}

/// A place on this thread's watch; taken off when dropped.
struct Ticket {
    slot: usize,
    turn: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // At thread exit the watch may be gone: nothing left to take off.
        let _ = WATCH.try_with(|w| w.borrow_mut().leave(self));
    }
}

#[derive(Default)]
struct Watch {
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// A ticker is spawned and has not fired yet.
    ticking: bool,
}

/// `turn` changes each time the slot is emptied, so a ticket whose waker
/// the ticker already took cannot empty the slot's next occupant.
#[derive(Default)]
struct Slot {
    turn: u64,
    waker: Option<Waker>,
}

thread_local! {
    static WATCH: RefCell<Watch> = RefCell::default();
}

/// Puts `waker` on this thread's watch, spawning the ticker if none is
/// due; `None` off an actix arbiter, where none can be.
fn watch(waker: &Waker) -> Option<Ticket> {
    WATCH.with(|w| {
        let mut w = w.borrow_mut();
        if !w.ticking {
            let arbiter = actix_rt::Arbiter::try_current()?;
            if !arbiter.spawn(tick_later()) {
                return None;
            }
            w.ticking = true;
        }
        Some(w.enter(waker.clone()))
    })
}

/// After [`TICK`], wakes everything on this thread's watch.
async fn tick_later() {
    tokio::time::sleep(TICK).await;
    let due = WATCH.with(|w| w.borrow_mut().take_all());
    // Woken outside the borrow: a wake may run code that watches again.
    for waker in due {
        waker.wake();
    }
}

impl Watch {
    fn enter(&mut self, waker: Waker) -> Ticket {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            self.slots.len() - 1
        });
        self.slots[slot].waker = Some(waker);
        Ticket {
            slot,
            turn: self.slots[slot].turn,
        }
    }

    fn leave(&mut self, ticket: &Ticket) {
        let Some(slot) = self.slots.get_mut(ticket.slot) else {
            return;
        };
        if slot.turn == ticket.turn && slot.waker.take().is_some() {
            slot.turn += 1;
            self.free.push(ticket.slot);
        }
    }

    /// Every waker on the watch, the watch left empty and no ticker due.
    fn take_all(&mut self) -> Vec<Waker> {
        self.ticking = false;
        let mut due = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(waker) = slot.waker.take() {
                slot.turn += 1;
                self.free.push(i);
                due.push(waker);
            }
        }
        due
    }

    #[cfg(test)]
    fn watched(&self) -> usize {
        self.slots.iter().filter(|s| s.waker.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (Arc::clone(&count), Waker::from(count))
    }

    #[test]
    fn a_ticket_whose_waker_the_ticker_took_does_not_free_its_slot_again() {
        let mut w = Watch::default();
        let (first, waker) = counting();
        let stale = w.enter(waker);
        for waker in w.take_all() {
            waker.wake();
        }
        assert_eq!(first.0.load(Ordering::SeqCst), 1);
        // The slot's next occupant stays watched when the stale ticket goes.
        let (second, waker) = counting();
        let current = w.enter(waker);
        assert_eq!(current.slot, stale.slot);
        w.leave(&stale);
        assert_eq!(w.watched(), 1);
        w.leave(&current);
        assert_eq!(w.watched(), 0);
        assert_eq!(w.free, vec![stale.slot]);
        assert_eq!(second.0.load(Ordering::SeqCst), 0);
    }

    /// Never ready until its second poll.
    struct Late {
        polls: usize,
    }
    impl Future for Late {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            self.polls += 1;
            if self.polls > 1 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    #[actix_web::test]
    async fn a_look_that_is_not_polled_again_is_woken_by_the_ticker() {
        let mut late = std::pin::pin!(Late { polls: 0 });
        let (woken, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut look = std::pin::pin!(quietly(late.as_mut()));
        assert!(look.as_mut().poll(&mut cx).is_pending());
        assert_eq!(WATCH.with(|w| w.borrow().watched()), 1);
        // Nobody polls it: the ticker wakes it.
        tokio::time::sleep(TICK + Duration::from_millis(200)).await;
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(look.as_mut().poll(&mut cx), Poll::Ready(None));
        assert_eq!(WATCH.with(|w| w.borrow().watched()), 0);
    }

    #[actix_web::test]
    async fn a_look_polled_again_leaves_the_watch_unwoken() {
        let mut late = std::pin::pin!(Late { polls: 0 });
        let (woken, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut look = std::pin::pin!(quietly(late.as_mut()));
        assert!(look.as_mut().poll(&mut cx).is_pending());
        assert_eq!(look.as_mut().poll(&mut cx), Poll::Ready(None));
        assert_eq!(WATCH.with(|w| w.borrow().watched()), 0);
        tokio::time::sleep(TICK + Duration::from_millis(200)).await;
        assert_eq!(woken.0.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn off_an_arbiter_the_look_asks_to_be_woken_as_usual() {
        let mut late = std::pin::pin!(Late { polls: 0 });
        let (_, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut look = std::pin::pin!(quietly(late.as_mut()));
        assert_eq!(look.as_mut().poll(&mut cx), Poll::Ready(None));
        assert_eq!(WATCH.with(|w| w.borrow().watched()), 0);
    }
}
