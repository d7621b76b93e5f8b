//! SIGINT and SIGTERM, taken away from plugins: both are blocked in every thread before the
//! first one starts (threads inherit the mask), and one thread of ours takes them with
//! `sigwait`. A plugin loaded in this process that sets SIGINT to "ignore" or installs a
//! handler of its own then changes nothing: on Linux a blocked signal is never discarded as
//! ignored, it stays pending until our thread takes it. Child processes start with an empty
//! mask (the standard library clears it before `exec`), so workers and programs a runtime
//! starts get signals as usual.

#[cfg(unix)]
pub use unix::{interrupt, take_over, terminate};

/// SIGINT or SIGTERM, whichever comes first (for servers and workers: either shuts down).
pub async fn interrupt_or_terminate() {
    let (interrupt, terminate) = (interrupt(), terminate());
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

#[cfg(not(unix))]
pub use elsewhere::{interrupt, take_over, terminate};

/// Where there is no `sigwait`: tokio's Ctrl-C, and no SIGTERM.
#[cfg(not(unix))]
mod elsewhere {
    pub fn take_over() {}

    pub fn interrupt() -> impl Future<Output = ()> + Send + 'static {
        async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    pub fn terminate() -> impl Future<Output = ()> + Send + 'static {
        std::future::pending()
    }
}

#[cfg(unix)]
mod unix {
    use std::sync::OnceLock;

    use nix::sys::signal::{SigSet, Signal};
    use tokio::sync::watch;

    /// How many of each signal arrived so far.
    struct Counts {
        interrupt: watch::Sender<u64>,
        terminate: watch::Sender<u64>,
    }

    static COUNTS: OnceLock<Counts> = OnceLock::new();

    fn watched() -> SigSet {
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        set
    }

    /// Blocks SIGINT and SIGTERM in this thread (and so in every thread started after) and
    /// starts the thread that takes them. Call it first in `main`, before any thread starts;
    /// when it cannot, signals keep their default action (the process ends) and it says why.
    pub fn take_over() {
        let set = watched();
        if let Err(error) = set.thread_block() {
            tracing::warn!(%error, "could not block SIGINT and SIGTERM; Ctrl-C ends the process");
            return;
        }
        let counts = COUNTS.get_or_init(|| Counts {
            interrupt: watch::Sender::new(0),
            terminate: watch::Sender::new(0),
        });
        let spawned = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                loop {
                    match set.wait() {
                        Ok(Signal::SIGINT) => counts.interrupt.send_modify(|n| *n += 1),
                        Ok(Signal::SIGTERM) => counts.terminate.send_modify(|n| *n += 1),
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(%error, "waiting for signals failed");
                            return;
                        }
                    }
                }
            });
        if let Err(error) = spawned {
            // Nobody would take the signals: give them back their default action.
            let _ = set.thread_unblock();
            tracing::warn!(%error, "could not start the signal thread; Ctrl-C ends the process");
        }
    }

    /// Resolves at the next signal counted by `pick` after this call (the call subscribes, not
    /// the first poll, so a signal between the two is not missed).
    fn next(pick: fn(&Counts) -> &watch::Sender<u64>) -> impl Future<Output = ()> + Send + 'static {
        let receiver = COUNTS.get().map(|counts| {
            let mut receiver = pick(counts).subscribe();
            receiver.mark_unchanged();
            receiver
        });
        async move {
            match receiver {
                Some(mut receiver) => {
                    if receiver.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                // Not taken over: the signal's default action ends the process.
                None => std::future::pending().await,
            }
        }
    }

    /// The next SIGINT (Ctrl-C).
    pub fn interrupt() -> impl Future<Output = ()> + Send + 'static {
        next(|c| &c.interrupt)
    }

    /// The next SIGTERM.
    pub fn terminate() -> impl Future<Output = ()> + Send + 'static {
        next(|c| &c.terminate)
    }
}
