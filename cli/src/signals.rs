//! SIGINT, SIGTERM and SIGHUP, taken away from plugins: they are blocked in every thread
//! before the first one starts (threads inherit the mask), and one thread of ours takes them
//! with `sigwait`; a signal nothing of the command waits for ends the process, as its default
//! action would (exit status 128 + its number). A plugin loaded in this process that sets SIGINT to "ignore" or installs a
//! handler of its own then changes nothing: on Linux a blocked signal is never discarded as
//! ignored, it stays pending until our thread takes it. Children started with Rust's `Command`
//! (std or tokio: the workers, the command runtime's programs, MCP servers) start with an
//! empty mask, since the standard library clears it before `exec`; a child an in-process
//! plugin starts some other way (`posix_spawn`, `fork` and `exec`, `system`) inherits the
//! blocked signals, as it would any mask of the host's. A second SIGINT or SIGTERM while
//! `serve` or `worker` winds down (nothing waits for it then) ends the process at once: the
//! usual "press Ctrl-C again to force".

#[cfg(unix)]
pub use unix::{Hangups, interrupt, take_over, terminate};

/// SIGINT or SIGTERM, whichever comes first (for servers and workers: either shuts down).
pub async fn interrupt_or_terminate() {
    let (interrupt, terminate) = (interrupt(), terminate());
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

#[cfg(not(unix))]
pub use elsewhere::{Hangups, interrupt, take_over, terminate};

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

    /// SIGHUPs: none here.
    pub struct Hangups;

    impl Hangups {
        pub fn subscribe() -> Self {
            Hangups
        }

        pub async fn recv(&mut self) {
            std::future::pending::<()>().await;
        }
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
        hangup: watch::Sender<u64>,
    }

    static COUNTS: OnceLock<Counts> = OnceLock::new();

    fn watched() -> SigSet {
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGHUP);
        set
    }

    /// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in every thread started after) and
    /// starts the thread that takes them. Call it first in `main`, before any thread starts;
    /// when it cannot, signals keep their default action (the process ends) and it says why.
    pub fn take_over() {
        let set = watched();
        if let Err(error) = set.thread_block() {
            tracing::warn!(%error, "could not block SIGINT, SIGTERM and SIGHUP; Ctrl-C ends the process");
            return;
        }
        let counts = COUNTS.get_or_init(|| Counts {
            interrupt: watch::Sender::new(0),
            terminate: watch::Sender::new(0),
            hangup: watch::Sender::new(0),
        });
        let spawned = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                loop {
                    let (signal, sender) = match set.wait() {
                        Ok(Signal::SIGINT) => (Signal::SIGINT, &counts.interrupt),
                        Ok(Signal::SIGTERM) => (Signal::SIGTERM, &counts.terminate),
                        Ok(Signal::SIGHUP) => (Signal::SIGHUP, &counts.hangup),
                        Ok(_) => continue,
                        Err(error) => {
                            tracing::warn!(%error, "waiting for signals failed");
                            return;
                        }
                    };
                    if sender.receiver_count() == 0 {
                        // Nothing of the command waits for it: what the signal's default
                        // action would have done, end the process (128 + its number).
                        std::process::exit(128 + signal as i32);
                    }
                    sender.send_modify(|n| *n += 1);
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

    /// SIGHUPs, from the moment of subscribing: while this lives, a SIGHUP never ends the
    /// process (each is seen by [`Hangups::recv`], several in a row as one).
    pub struct Hangups(Option<watch::Receiver<u64>>);

    impl Hangups {
        pub fn subscribe() -> Self {
            Hangups(COUNTS.get().map(|counts| {
                let mut receiver = counts.hangup.subscribe();
                receiver.mark_unchanged();
                receiver
            }))
        }

        /// The next SIGHUP (or those since the last call).
        pub async fn recv(&mut self) {
            let arrived = match &mut self.0 {
                Some(receiver) => receiver.changed().await.is_ok(),
                None => false,
            };
            if !arrived {
                std::future::pending::<()>().await;
            }
        }
    }
}
