//! The tasks one `whatsapp-rust` client spawns, owned so that stopping the
//! client ends all of them.
//!
//! The client spawns background tasks through the runtime it is given, and
//! some outlive `disconnect()`: a pairing's QR rotation runs until its codes
//! run out (up to 160 s) or the pairing succeeds, holding the client, and
//! with it the store's open files. A stopped session must let go of its
//! store at once (a reset deletes it; a node at its descriptor limit needs
//! the descriptors back), so each client gets a runtime of its own that keeps
//! its tasks in a [`JoinSet`], and [`OwnedTasks::abort_all`] ends them.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinSet;
use whatsapp_rust::wacore::runtime::{AbortHandle, Runtime};

type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Tokio, keeping the handles of what it spawns. Clones share the set.
#[derive(Clone, Default)]
pub(super) struct OwnedTasks {
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl OwnedTasks {
    fn set(&self) -> MutexGuard<'_, JoinSet<()>> {
        // Nothing panics while holding the lock; if something did, the set
        // is still a set of handles and stays usable.
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The set, with the tasks that finished taken out: reaped as new ones
    /// come, so a session that runs for months does not accumulate one
    /// entry per message.
    fn reaped(&self) -> MutexGuard<'_, JoinSet<()>> {
        let mut set = self.set();
        while set.try_join_next().is_some() {}
        set
    }

    fn track(&self, future: Task) -> tokio::task::AbortHandle {
        self.reaped().spawn(future)
    }

    /// Aborts every task the client spawned that is still running.
    pub(super) fn abort_all(&self) {
        self.set().abort_all();
    }

    /// How many of the client's tasks have not finished (or been reaped).
    #[cfg(test)]
    fn running(&self) -> usize {
        self.reaped().len()
    }
}

impl Runtime for OwnedTasks {
    fn spawn(&self, future: Task) -> AbortHandle {
        let handle = self.track(future);
        AbortHandle::new(move || handle.abort())
    }

    fn spawn_detached(&self, future: Task) {
        self.track(future);
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(duration))
    }

    fn spawn_blocking(
        &self,
        f: Box<dyn FnOnce() + Send + 'static>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        // A blocking closure cannot be aborted; it ends by itself.
        Box::pin(async {
            let _ = tokio::task::spawn_blocking(f).await;
        })
    }

    fn yield_now(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        // A multi-threaded runtime: other tasks run on other threads.
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stopping_ends_every_task_and_lets_go_of_what_they_hold() {
        let tasks = OwnedTasks::default();
        let held = Arc::new(());
        for _ in 0..3 {
            let held = held.clone();
            tasks.spawn_detached(Box::pin(async move {
                let _held = held;
                std::future::pending::<()>().await;
            }));
        }
        let handle = tasks.spawn(Box::pin(std::future::pending::<()>()));
        handle.detach();
        assert_eq!(tasks.running(), 4);
        assert_eq!(Arc::strong_count(&held), 4);
        tasks.abort_all();
        for _ in 0..100 {
            if Arc::strong_count(&held) == 1 && tasks.running() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "tasks still hold their captures: {}",
            Arc::strong_count(&held)
        );
    }

    #[tokio::test]
    async fn finished_tasks_are_not_kept() {
        let tasks = OwnedTasks::default();
        for _ in 0..100 {
            tasks.spawn_detached(Box::pin(async {}));
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            if tasks.running() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} finished tasks kept", tasks.running());
    }
}
